variable "name" {
  description = "The EKS cluster's name (also the prefix of its roles, key and log group)."
  type        = string
}

variable "kubernetes_version" {
  description = "EKS control plane version (major.minor)."
  type        = string
  default     = "1.31"

  validation {
    condition     = can(regex("^1\\.[0-9]+$", var.kubernetes_version))
    error_message = "kubernetes_version must be major.minor, such as 1.31."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the control plane's interfaces and the nodes, in at least two zones."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids needs subnets in at least 2 zones."
  }
}

variable "endpoint_public_access" {
  description = "Whether the Kubernetes API answers on a public address (restricted to public_access_cidrs); false: only from inside the VPC."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "Ranges that may reach a public API endpoint (ignored when endpoint_public_access is false)."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.public_access_cidrs, "0.0.0.0/0")
    error_message = "public_access_cidrs must not contain 0.0.0.0/0: name the operators' ranges."
  }
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed node group (the first that has capacity is used)."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "node_min_size" {
  description = "Fewest nodes in the managed node group."
  type        = number
  default     = 2
}

variable "node_desired_size" {
  description = "Nodes at creation; later changes come from the cluster autoscaler and are ignored here."
  type        = number
  default     = 3
}

variable "node_max_size" {
  description = "Most nodes in the managed node group."
  type        = number
  default     = 6
}

variable "node_disk_size_gb" {
  description = "Root volume of each node, in GiB (encrypted)."
  type        = number
  default     = 50
}

variable "log_retention_days" {
  description = "How long control plane logs are kept in CloudWatch Logs."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "efs_csi_driver" {
  description = "Install the EFS CSI driver add-on, which mounts the shared_files module's volume into the hub's pods."
  type        = bool
  default     = true
}
