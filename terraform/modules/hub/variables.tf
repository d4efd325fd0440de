variable "name" {
  description = "Name of the Deployment, Service, autoscaler, disruption budget and service account."
  type        = string
  default     = "edgefleet-hub"
}

variable "namespace" {
  description = "An existing Kubernetes namespace for the hub; the secrets it names must be in it."
  type        = string
  default     = "edgefleet"

  validation {
    condition     = var.namespace != "default"
    error_message = "namespace must not be \"default\": give the hub a namespace of its own."
  }
}

variable "image" {
  description = "The hub's container image, pinned by digest (registry/edgefleet-hub@sha256:...) so every replica runs the same build."
  type        = string

  validation {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be pinned by digest (name@sha256:<64 hex>), not by a tag that can move."
  }
}

variable "command" {
  description = "The container's command (the image's entry point runs `fleet`)."
  type        = list(string)
  default     = ["fleet", "hub"]
}

variable "replicas" {
  description = "Replicas at creation and the autoscaler's floor (at least 2 so one can restart while the other serves)."
  type        = number
  default     = 2

  validation {
    condition     = var.replicas >= 1
    error_message = "replicas must be at least 1."
  }
}

variable "max_replicas" {
  description = "The autoscaler's ceiling."
  type        = number
  default     = 6
}

variable "target_cpu_percent" {
  description = "Average CPU use (percent of the request) the autoscaler keeps the replicas at."
  type        = number
  default     = 70
}

variable "cpu_request" {
  description = "CPU request of each replica."
  type        = string
  default     = "500m"
}

variable "cpu_limit" {
  description = "CPU limit of each replica."
  type        = string
  default     = "2"
}

variable "memory_request" {
  description = "Memory request of each replica."
  type        = string
  default     = "512Mi"
}

variable "memory_limit" {
  description = "Memory limit of each replica (uploads are validated in a child process capped below it)."
  type        = string
  default     = "3Gi"
}

variable "run_as_user" {
  description = "Numeric user id the hub runs as (the image's non-root user)."
  type        = number
  default     = 10001

  validation {
    condition     = var.run_as_user > 0
    error_message = "run_as_user must not be 0 (root)."
  }
}

variable "fleet" {
  description = "The fleet this hub serves (EDGEFLEET_FLEET)."
  type        = string
  default     = "default"
}

variable "mqtt_host" {
  description = "The broker as the hub reaches it (EDGEFLEET_MQTT_HOST; the mqtt module's host output)."
  type        = string
}

variable "mqtt_port" {
  description = "The broker's port (EDGEFLEET_MQTT_PORT)."
  type        = number
  default     = 8883
}

variable "device_mqtt_endpoint" {
  description = "host:port devices are provisioned with (EDGEFLEET_DEVICE_MQTT_ENDPOINT); null: {mqtt_host}:8883."
  type        = string
  default     = null
}

variable "grpc_public_endpoint" {
  description = "host:port devices fetch artifacts from (EDGEFLEET_GRPC_PUBLIC_ENDPOINT): the gRPC load balancer's name."
  type        = string
  default     = null
}

variable "artifact_store" {
  description = "Where artifacts live (EDGEFLEET_ARTIFACT_STORE): s3 for replicas; local only with a single replica."
  type        = string
  default     = "s3"

  validation {
    condition     = contains(["s3", "local"], var.artifact_store)
    error_message = "artifact_store must be \"s3\" or \"local\"."
  }
}

variable "s3_bucket" {
  description = "The artifact bucket (EDGEFLEET_S3_BUCKET; the object_storage module's bucket_name)."
  type        = string
  default     = null
}

variable "s3_prefix" {
  description = "Key prefix of the artifacts in the bucket (EDGEFLEET_S3_PREFIX)."
  type        = string
  default     = "artifacts/"
}

variable "s3_region" {
  description = "The bucket's region (EDGEFLEET_S3_REGION)."
  type        = string
  default     = null
}

variable "s3_endpoint_url" {
  description = "An S3-compatible endpoint other than AWS (EDGEFLEET_S3_ENDPOINT_URL); null for AWS S3."
  type        = string
  default     = null
}

variable "secret_name" {
  description = "An existing Kubernetes secret in namespace with key database-url (EDGEFLEET_DATABASE_URL) and, optionally, tuf-online-passphrase and mqtt-password."
  type        = string
}

variable "mqtt_tls_secret_name" {
  description = "An existing Kubernetes secret with ca.crt, tls.crt and tls.key: the hub's MQTT client certificate (CN edgefleet-hub); null: no client certificate."
  type        = string
  default     = null
}

variable "grpc_tls_secret_name" {
  description = "An existing Kubernetes secret with tls.crt and tls.key (`fleet identity server-cert` for the artifact endpoint's name) and ca.crt (the fleet CA: devices must present its certificates); null: plaintext gRPC."
  type        = string
  default     = null
}

variable "identity_secret_name" {
  description = "An existing Kubernetes secret with ca.key and ca.crt: the fleet CA the hub signs device certificates with; null (one replica only): the hub makes a CA in its data folder."
  type        = string
  default     = null
}

variable "keys_claim_name" {
  description = "An existing ReadWriteMany PersistentVolumeClaim in namespace for the update repository's keys (EDGEFLEET_TUF_KEYS_DIR), shared by every replica; null only with a single replica."
  type        = string
  default     = null
}

variable "service_account_role_arn" {
  description = "IAM role the hub's service account assumes through IRSA (access to the artifact bucket)."
  type        = string
  default     = null
}

variable "api_service_type" {
  description = "Service type of the HTTP API (ClusterIP behind an ingress, or LoadBalancer)."
  type        = string
  default     = "ClusterIP"
}

variable "api_service_annotations" {
  description = "Annotations on the API service (for example an internal load balancer)."
  type        = map(string)
  default     = {}
}

variable "grpc_service_type" {
  description = "Service type of the gRPC artifact service, which devices reach (LoadBalancer in most fleets)."
  type        = string
  default     = "LoadBalancer"
}

variable "grpc_service_annotations" {
  description = "Annotations on the gRPC service (load balancer type and scheme on EKS)."
  type        = map(string)
  default     = {}
}

variable "log_format" {
  description = "EDGEFLEET_LOG_FORMAT: json for a log pipeline, text for people."
  type        = string
  default     = "json"
}

variable "extra_env" {
  description = "More EDGEFLEET_* settings (name = value) passed as they are; never secrets (use secret_name)."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels added to every object."
  type        = map(string)
  default     = {}
}
