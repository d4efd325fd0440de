output "file_system_id" {
  description = "The EFS file system's id."
  value       = aws_efs_file_system.this.id
}

output "hub_keys_access_point_id" {
  description = "The access point for the hub's keys folder (a PersistentVolume's volume handle is <file_system_id>::<this>)."
  value       = aws_efs_access_point.hub_keys.id
}

output "security_group_id" {
  description = "The mount targets' security group."
  value       = aws_security_group.files.id
}
