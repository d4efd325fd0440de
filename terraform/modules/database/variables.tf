variable "name" {
  description = "The DB instance identifier and the prefix of its subnet group, parameter group and key."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the database lives in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the DB subnet group, in at least two zones."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids needs subnets in at least 2 zones (RDS requires it, multi-AZ or not)."
  }
}

variable "allowed_security_group_ids" {
  description = "Security groups whose members may connect on 5432 (the EKS cluster's security group)."
  type        = list(string)
}

variable "engine_version" {
  description = "PostgreSQL major version; minor versions are upgraded by AWS in the maintenance window."
  type        = string
  default     = "16"
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "allocated_storage_gb" {
  description = "Initial storage in GiB."
  type        = number
  default     = 50
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling in GiB (docs/capacity.md gives the bytes a device adds per day)."
  type        = number
  default     = 500
}

variable "multi_az" {
  description = "A synchronous standby in a second zone that takes over on failure."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days of automated backups and point-in-time recovery (at least 7)."
  type        = number
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 7 and 35."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the instance until this is turned off in a separate apply."
  type        = bool
  default     = true
}

variable "database_name" {
  description = "The database the hub uses."
  type        = string
  default     = "edgefleet"
}

variable "master_username" {
  description = "The master user's name (the hub connects as it unless a narrower role is made)."
  type        = string
  default     = "edgefleet"
}

variable "master_password" {
  description = "The master user's password (the secrets module makes one and keeps it in Secrets Manager)."
  type        = string
  sensitive   = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
