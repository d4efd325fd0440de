variable "bucket_name" {
  description = "The artifact bucket's globally unique name (EDGEFLEET_S3_BUCKET)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit."
  }
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted artifact version is kept before it expires (artifacts are content-addressed, so this only bounds mistakes)."
  type        = number
  default     = 90
}

variable "noncurrent_versions_kept" {
  description = "Noncurrent versions of one key kept regardless of age."
  type        = number
  default     = 3
}

variable "access_log_bucket" {
  description = "An existing bucket that receives S3 server access logs; null: no access logging."
  type        = string
  default     = null
}

variable "access_log_prefix" {
  description = "Key prefix of this bucket's access logs inside access_log_bucket."
  type        = string
  default     = "s3-access/edgefleet-artifacts/"
}

variable "force_destroy" {
  description = "Let terraform destroy the bucket with objects in it (for throwaway environments only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
