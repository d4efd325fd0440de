variable "name" {
  description = "Prefix of the file system, its key and its security group."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the file system's mount targets live in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per zone, that get a mount target each."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups whose members may mount the file system (the EKS cluster's security group)."
  type        = list(string)
}

variable "posix_uid" {
  description = "User and group id that owns the access point's folder: the hub's run_as_user."
  type        = number
  default     = 10001
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
