output "cluster_name" {
  description = "The EKS cluster (aws eks update-kubeconfig --name <this>)."
  value       = module.kubernetes_cluster.cluster_name
}

output "database_address" {
  description = "The PostgreSQL host inside the VPC."
  value       = module.database.address
}

output "artifact_bucket" {
  description = "The artifact bucket."
  value       = module.object_storage.bucket_name
}

output "mqtt_device_endpoint" {
  description = "host:port devices connect to (EDGEFLEET_DEVICE_MQTT_ENDPOINT)."
  value       = module.mqtt.device_endpoint
}

output "hub_api_service" {
  description = "The hub API inside the cluster (kubectl port-forward to reach it)."
  value       = module.hub.api_service
}

output "hub_grpc_public_endpoint" {
  description = "host:port devices fetch artifacts from."
  value       = module.hub.grpc_public_endpoint
}

output "operator_token_secret_arn" {
  description = "Where to keep the operator token (aws secretsmanager put-secret-value)."
  value       = module.secrets.operator_token_secret_arn
  sensitive   = true
}

output "mqtt_dashboard_password" {
  description = "The EMQX dashboard's admin password (reach the dashboard with kubectl port-forward)."
  value       = module.mqtt.dashboard_password
  sensitive   = true
}
