output "host" {
  description = "Where clients inside the cluster reach the broker's TLS listener (EDGEFLEET_MQTT_HOST): the EMQX service, or the managed service's host."
  value       = local.install ? "${kubernetes_service_v1.mqtts[0].metadata[0].name}.${var.namespace}.svc.cluster.local" : var.managed_host

  precondition {
    condition     = local.install || var.managed_host != null
    error_message = "use_managed_service = true needs managed_host: expected the managed broker's host name."
  }
}

output "port" {
  description = "The TLS port (EDGEFLEET_MQTT_PORT)."
  value       = local.install ? 8883 : var.managed_port
}

output "device_endpoint" {
  description = "host:port for devices (EDGEFLEET_DEVICE_MQTT_ENDPOINT): the load balancer's name once it has one, or the managed service."
  value = local.install ? format("%s:8883", try(
    kubernetes_service_v1.mqtts[0].status[0].load_balancer[0].ingress[0].hostname,
    kubernetes_service_v1.mqtts[0].status[0].load_balancer[0].ingress[0].ip,
    "${kubernetes_service_v1.mqtts[0].metadata[0].name}.${var.namespace}.svc.cluster.local",
  )) : "${var.managed_host}:${var.managed_port}"
}

output "dashboard_password" {
  description = "The EMQX dashboard's admin password (reach it with kubectl port-forward; it is not exposed). null with a managed service."
  value       = local.install ? random_password.dashboard[0].result : null
  sensitive   = true
}
