variable "name_prefix" {
  description = "Prefix of the role's name; AWS adds a unique suffix (for example \"<name>-node-\")."
  type        = string
}

variable "service" {
  description = "The service principal that assumes the role, such as eks.amazonaws.com."
  type        = string

  validation {
    condition     = endswith(var.service, ".amazonaws.com")
    error_message = "service must be an AWS service principal ending in .amazonaws.com."
  }
}

variable "assume_actions" {
  description = "What the service may do with the role in its trust policy (EKS also tags its sessions: sts:TagSession)."
  type        = list(string)
  default     = ["sts:AssumeRole"]
}

variable "aws_managed_policies" {
  description = "AWS managed policies to attach, by their path after policy/ (such as service-role/AmazonRDSEnhancedMonitoringRole)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for the role."
  type        = map(string)
  default     = {}
}
