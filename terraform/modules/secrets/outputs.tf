output "db_password" {
  description = "The PostgreSQL master password (for the database module and the hub's database URL)."
  value       = random_password.db.result
  sensitive   = true
}

output "tuf_online_passphrase" {
  description = "The online signing keys' passphrase (EDGEFLEET_TUF_ONLINE_PASSPHRASE)."
  value       = random_password.tuf_online.result
  sensitive   = true
}

output "db_password_secret_arn" {
  description = "Secrets Manager ARN of the database password."
  value       = aws_secretsmanager_secret.this["db-password"].arn
  sensitive   = true
}

output "tuf_online_passphrase_secret_arn" {
  description = "Secrets Manager ARN of the online keys' passphrase."
  value       = aws_secretsmanager_secret.this["tuf-online-passphrase"].arn
  sensitive   = true
}

output "operator_token_secret_arn" {
  description = "Secrets Manager ARN of the operator token slot (put its value with aws secretsmanager put-secret-value)."
  value       = aws_secretsmanager_secret.this["operator-token"].arn
  sensitive   = true
}

output "fleet_ca_secret_arn" {
  description = "Secrets Manager ARN of the fleet CA (ca.key, ca.crt as JSON); null when no CA key was given. The key itself is never output."
  value       = local.store_ca ? aws_secretsmanager_secret.this["fleet-ca"].arn : null
  sensitive   = true
}

output "read_policy_arn" {
  description = "An IAM policy that reads these secrets (attach it to a role that mounts them)."
  value       = aws_iam_policy.read.arn
  sensitive   = true
}
