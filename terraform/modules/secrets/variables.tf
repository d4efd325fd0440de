variable "name" {
  description = "Prefix of every secret's name (secrets are named {name}/db-password and so on)."
  type        = string
}

variable "fleet_ca_key_pem" {
  description = "The fleet CA's private key, PEM (`fleet identity ca` makes it in the identity folder; the hub signs device certificates with it). null: no CA secret is made. Never output in clear."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.fleet_ca_key_pem == null || can(regex("-----BEGIN [A-Z ]*PRIVATE KEY-----", var.fleet_ca_key_pem))
    error_message = "fleet_ca_key_pem must be a PEM private key (-----BEGIN ... PRIVATE KEY-----) or null."
  }
}

variable "fleet_ca_cert_pem" {
  description = "The fleet CA's certificate, PEM, kept next to its key (public: brokers and devices trust it)."
  type        = string
  default     = null
}

variable "recovery_window_days" {
  description = "Days a deleted secret can still be restored (0 deletes at once: throwaway environments only)."
  type        = number
  default     = 30

  validation {
    condition     = var.recovery_window_days == 0 || (var.recovery_window_days >= 7 && var.recovery_window_days <= 30)
    error_message = "recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
