output "address" {
  description = "The instance's DNS name (inside the VPC)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "The PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "The hub's database."
  value       = aws_db_instance.this.db_name
}

output "username" {
  description = "The master user's name."
  value       = aws_db_instance.this.username
}

output "security_group_id" {
  description = "The database's security group (add ingress rules for other clients to it)."
  value       = aws_security_group.db.id
}

output "instance_arn" {
  description = "The DB instance's ARN (for rds-db:connect IAM policies)."
  value       = aws_db_instance.this.arn
}

output "resource_id" {
  description = "The DB instance's resource id (IAM database authentication policies name it)."
  value       = aws_db_instance.this.resource_id
}
