variable "use_managed_service" {
  description = "Use a managed MQTT service (its endpoint passes through to the outputs) instead of installing EMQX."
  type        = bool
  default     = false
}

variable "managed_host" {
  description = "The managed service's host name (only with use_managed_service)."
  type        = string
  default     = null
}

variable "managed_port" {
  description = "The managed service's TLS port (only with use_managed_service)."
  type        = number
  default     = 8883
}

variable "namespace" {
  description = "Kubernetes namespace for EMQX (created by this module's release when missing)."
  type        = string
  default     = "emqx"
}

variable "release_name" {
  description = "Helm release name; also the prefix of the broker's service names."
  type        = string
  default     = "emqx"
}

variable "chart_version" {
  description = "The EMQX Helm chart version from repos.emqx.io (pinned: an upgrade is a reviewed change)."
  type        = string
  default     = "5.8.3"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.chart_version))
    error_message = "chart_version must be an exact version such as 5.8.3, not a range."
  }
}

variable "cluster_size" {
  description = "EMQX nodes (replicas of the StatefulSet); 3 survives the loss of one zone."
  type        = number
  default     = 3

  validation {
    condition     = var.cluster_size >= 1
    error_message = "cluster_size must be at least 1."
  }
}

variable "server_cert_pem" {
  description = "The broker's TLS certificate chain, PEM (`fleet identity server-cert`, or a public CA's); the names devices dial must be in it."
  type        = string
  default     = null
}

variable "server_key_pem" {
  description = "The broker's TLS private key, PEM. Never output."
  type        = string
  default     = null
  sensitive   = true
}

variable "client_ca_pem" {
  description = "The fleet CA certificate, PEM: client certificates (devices, the hub) must chain to it."
  type        = string
  default     = null
}

variable "require_client_certificates" {
  description = "Refuse TLS clients without a certificate from the fleet CA (devices and the hub authenticate with them)."
  type        = bool
  default     = true
}

variable "plain_listener_enabled" {
  description = "Keep EMQX's plain-text listener on 1883 (inside the cluster only); off by default so every client uses TLS."
  type        = bool
  default     = false
}

variable "service_type" {
  description = "Kubernetes service type of the broker (LoadBalancer so devices can reach 8883)."
  type        = string
  default     = "LoadBalancer"

  validation {
    condition     = contains(["ClusterIP", "LoadBalancer", "NodePort"], var.service_type)
    error_message = "service_type must be ClusterIP, LoadBalancer or NodePort."
  }
}

variable "service_annotations" {
  description = "Annotations on the broker's service (load balancer type and scheme on EKS)."
  type        = map(string)
  default     = {}
}

variable "max_mqueue_len" {
  description = "Messages EMQX queues per session for a slow subscriber before dropping; sized for the hub's shared subscription during a fleet-wide reconnect."
  type        = number
  default     = 100000
}

variable "persistence_size" {
  description = "Size of each node's data volume (retained messages and sessions survive a pod restart)."
  type        = string
  default     = "20Gi"
}

variable "storage_class" {
  description = "StorageClass of the data volumes; null: the cluster's default."
  type        = string
  default     = null
}

variable "cpu_request" {
  description = "CPU request of each EMQX node."
  type        = string
  default     = "1"
}

variable "memory_request" {
  description = "Memory request (and limit) of each EMQX node."
  type        = string
  default     = "2Gi"
}

variable "cpu_limit" {
  description = "CPU limit of each EMQX node."
  type        = string
  default     = "2"
}
