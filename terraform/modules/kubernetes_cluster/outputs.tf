output "cluster_name" {
  description = "The EKS cluster's name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "The Kubernetes API's URL (for the kubernetes and helm providers)."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_ca_certificate" {
  description = "The cluster CA certificate, PEM (decoded from EKS's base64)."
  value       = base64decode(aws_eks_cluster.this.certificate_authority[0].data)
}

output "cluster_security_group_id" {
  description = "The security group EKS gives the control plane and the managed nodes (admit it at the database)."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "oidc_provider_arn" {
  description = "The IAM OIDC provider for IRSA roles' trust policies."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer" {
  description = "The OIDC issuer without its https:// scheme, as IRSA trust conditions name it."
  value       = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}

output "node_role_arn" {
  description = "The managed nodes' IAM role."
  value       = module.node_role.arn
}
