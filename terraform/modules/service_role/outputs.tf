output "arn" {
  description = "The role's ARN (what the service is given)."
  value       = aws_iam_role.this.arn
}

output "name" {
  description = "The role's name (for inline policies and attachments of the caller's own)."
  value       = aws_iam_role.this.name
}
