output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "The VPC's IPv4 range (for security group rules that admit the whole network)."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets, one per zone: EKS nodes and the database."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnets, one per zone: NAT gateways and internet-facing load balancers."
  value       = aws_subnet.public[*].id
}

output "nat_public_ips" {
  description = "Addresses the hub's outbound traffic comes from (for allow-lists at webhook receivers)."
  value       = aws_eip.nat[*].public_ip
}
