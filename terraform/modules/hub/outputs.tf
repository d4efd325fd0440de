output "namespace" {
  description = "The hub's namespace."
  value       = var.namespace
}

output "service_account_name" {
  description = "The hub's service account (the IRSA trust policy names system:serviceaccount:<namespace>:<this>)."
  value       = kubernetes_service_account_v1.hub.metadata[0].name
}

output "api_service" {
  description = "The API service's in-cluster address, host:port."
  value       = "${kubernetes_service_v1.api.metadata[0].name}.${var.namespace}.svc.cluster.local:80"
}

output "grpc_service" {
  description = "The gRPC artifact service's in-cluster address, host:port."
  value       = "${kubernetes_service_v1.grpc.metadata[0].name}.${var.namespace}.svc.cluster.local:${local.grpc_port}"
}

output "grpc_public_endpoint" {
  description = "host:port devices fetch artifacts from (EDGEFLEET_GRPC_PUBLIC_ENDPOINT as the hub was given it); null when unknown."
  value       = local.grpc_endpoint
}
