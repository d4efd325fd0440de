variable "name" {
  description = "Prefix for every resource's Name tag, and the EKS cluster name the subnets are tagged for."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's IPv4 range; the subnets are carved from it."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr_block, 0))
    error_message = "cidr_block must be an IPv4 CIDR such as 10.40.0.0/16."
  }
}

variable "availability_zones" {
  description = "Zones to spread over, one public and one private subnet in each (at least 2: RDS multi-AZ and EKS need two)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "availability_zones needs at least 2 zones."
  }
}

variable "subnet_newbits" {
  description = "Bits added to the VPC prefix for each subnet (8 on a /16 gives /24 subnets)."
  type        = number
  default     = 4
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (survives the loss of a zone)."
  type        = bool
  default     = false
}

variable "flow_log_retention_days" {
  description = "How long VPC flow logs are kept in CloudWatch Logs."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
