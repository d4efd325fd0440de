variable "description" {
  description = "What the key encrypts, shown in the KMS console (for example \"<name> shared files\")."
  type        = string
}

variable "alias" {
  description = "An alias name without the alias/ prefix, so operators find the key by name; null: no alias."
  type        = string
  default     = null

  validation {
    condition     = can(regex("^[a-zA-Z0-9/_-]+$", coalesce(var.alias, "none"))) && !startswith(coalesce(var.alias, "none"), "aws/") && !startswith(coalesce(var.alias, "none"), "alias/")
    error_message = "alias must be letters, digits, '/', '_' or '-', without the alias/ prefix, and must not start with aws/ (AWS keeps those)."
  }
}

variable "principal_grants" {
  description = "IAM principals besides the account's administrators that may use the key, one statement each keyed by its Sid: the principals' ARNs and the KMS actions they get."
  type = map(object({
    principals = list(string)
    actions    = list(string)
  }))
  default = {}

  validation {
    condition     = alltrue([for grant in values(var.principal_grants) : !contains(grant.actions, "kms:*")])
    error_message = "principal_grants must name the KMS actions a principal needs, not kms:*."
  }
}

variable "cloudwatch_log_groups" {
  description = "Names of the log groups (wildcards allowed, such as /edgefleet/hub/*) whose CloudWatch Logs may encrypt with the key; empty: none."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for the key."
  type        = map(string)
  default     = {}
}
