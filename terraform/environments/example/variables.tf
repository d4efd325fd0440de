variable "region" {
  description = "AWS region of every resource."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Environment name: prefix of the VPC, cluster, database and secrets."
  type        = string
  default     = "edgefleet-example"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3-31 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "availability_zones" {
  description = "Zones to spread the network, nodes, database and broker over (at least 2)."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
}

variable "vpc_cidr" {
  description = "The VPC's IPv4 range."
  type        = string
  default     = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, loses egress with its zone) instead of one per zone."
  type        = bool
  default     = false
}

variable "kubernetes_version" {
  description = "EKS version (major.minor)."
  type        = string
  default     = "1.31"
}

variable "cluster_endpoint_public_access" {
  description = "Let the Kubernetes API answer on a public address for cluster_public_access_cidrs; false: terraform must run from inside the VPC (VPN, bastion)."
  type        = bool
  default     = false
}

variable "cluster_public_access_cidrs" {
  description = "Operator ranges allowed to reach a public Kubernetes API."
  type        = list(string)
  default     = []
}

variable "node_instance_types" {
  description = "Instance types of the EKS managed node group."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "node_min_size" {
  description = "Fewest EKS nodes."
  type        = number
  default     = 3
}

variable "node_desired_size" {
  description = "EKS nodes at creation."
  type        = number
  default     = 3
}

variable "node_max_size" {
  description = "Most EKS nodes."
  type        = number
  default     = 6
}

variable "db_instance_class" {
  description = "RDS PostgreSQL instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_multi_az" {
  description = "A standby database in a second zone."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated database backups (7-35)."
  type        = number
  default     = 14
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database (turn off in a separate apply before a destroy)."
  type        = bool
  default     = true
}

variable "artifact_bucket_name" {
  description = "Globally unique name of the artifact bucket."
  type        = string
}

variable "artifact_access_log_bucket" {
  description = "An existing bucket for the artifact bucket's access logs; null: none."
  type        = string
  default     = null
}

variable "fleet" {
  description = "The fleet the hub serves (EDGEFLEET_FLEET)."
  type        = string
  default     = "default"
}

variable "hub_image" {
  description = "The hub's image pinned by digest (registry/edgefleet-hub@sha256:...)."
  type        = string
}

variable "hub_replicas" {
  description = "Hub replicas at least (the autoscaler's floor)."
  type        = number
  default     = 2
}

variable "hub_max_replicas" {
  description = "Hub replicas at most (the autoscaler's ceiling)."
  type        = number
  default     = 6
}

variable "mqtt_use_managed_service" {
  description = "Use a managed MQTT broker instead of installing EMQX."
  type        = bool
  default     = false
}

variable "mqtt_managed_host" {
  description = "The managed broker's host (only with mqtt_use_managed_service)."
  type        = string
  default     = null
}

variable "emqx_chart_version" {
  description = "EMQX Helm chart version (exact)."
  type        = string
  default     = "5.8.3"
}

variable "mqtt_cluster_size" {
  description = "EMQX nodes."
  type        = number
  default     = 3
}

variable "mqtt_device_hostname" {
  description = "DNS name devices dial for the broker (a CNAME to the load balancer; the broker's certificate names it); null: the load balancer's own name."
  type        = string
  default     = null
}

variable "hub_grpc_hostname" {
  description = "DNS name devices fetch artifacts from (a CNAME to the hub's gRPC load balancer); null: the load balancer's own name."
  type        = string
  default     = null
}

variable "mqtt_server_cert_file" {
  description = "Path of the broker's TLS certificate, PEM (fleet identity server-cert)."
  type        = string
  default     = null
}

variable "mqtt_server_key_file" {
  description = "Path of the broker's TLS private key, PEM."
  type        = string
  default     = null
}

variable "fleet_ca_cert_file" {
  description = "Path of the fleet CA certificate, PEM (fleet identity ca makes it): brokers and the hub trust it."
  type        = string
}

variable "fleet_ca_key_file" {
  description = "Path of the fleet CA private key, PEM: the hub signs device certificates with it when it provisions devices."
  type        = string
}

variable "hub_mqtt_cert_file" {
  description = "Path of the hub's MQTT client certificate, PEM (CN edgefleet-hub: fleet identity hub-cert)."
  type        = string
}

variable "hub_mqtt_key_file" {
  description = "Path of the hub's MQTT client key, PEM."
  type        = string
}

variable "hub_grpc_cert_file" {
  description = "Path of the gRPC artifact service's TLS certificate, PEM (fleet identity server-cert <hub_grpc_hostname>); devices must present fleet certificates to it."
  type        = string
}

variable "hub_grpc_key_file" {
  description = "Path of the gRPC artifact service's TLS private key, PEM."
  type        = string
}

variable "tags" {
  description = "Tags on every AWS resource."
  type        = map(string)
  default     = {}
}
