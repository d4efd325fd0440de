output "arn" {
  description = "The key's ARN (for kms_key_id and key_arn arguments, and IAM policies)."
  value       = aws_kms_key.this.arn
}

output "key_id" {
  description = "The key's id."
  value       = aws_kms_key.this.key_id
}
