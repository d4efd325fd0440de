# The hub on Kubernetes: a Deployment of stateless replicas (the database and the artifact store
# hold all state), a Service per protocol, an autoscaler, and a disruption budget so that a node
# drain never takes every replica at once.
#
# Probes: the hub's /healthz answers 503 while the database is down. That is the right signal to
# take a replica out of the load balancer (readiness), and the wrong one to restart it (liveness):
# restarting every replica during a database failover would only add a thundering herd. Liveness
# is therefore "the API socket accepts", which a hung or dead process stops doing.

locals {
  api_port  = 8080
  grpc_port = 50051
  data_dir  = "/var/lib/edgefleet"

  labels   = merge(var.labels, { "app.kubernetes.io/name" = var.name, "app.kubernetes.io/part-of" = "edgefleet" })
  selector = { "app.kubernetes.io/name" = var.name }

  plain_env = merge(
    {
      EDGEFLEET_DATA_DIR       = "${local.data_dir}/data"
      EDGEFLEET_FLEET          = var.fleet
      EDGEFLEET_API_HOST       = "0.0.0.0"
      EDGEFLEET_API_PORT       = tostring(local.api_port)
      EDGEFLEET_GRPC_HOST      = "0.0.0.0"
      EDGEFLEET_GRPC_PORT      = tostring(local.grpc_port)
      EDGEFLEET_MQTT_HOST      = var.mqtt_host
      EDGEFLEET_MQTT_PORT      = tostring(var.mqtt_port)
      EDGEFLEET_MQTT_TLS       = "true"
      EDGEFLEET_SHARE_GROUP    = "edgefleet-hub"
      EDGEFLEET_LOG_FORMAT     = var.log_format
      EDGEFLEET_ARTIFACT_STORE = var.artifact_store
    },
    var.artifact_store == "s3" ? { EDGEFLEET_S3_BUCKET = var.s3_bucket, EDGEFLEET_S3_PREFIX = var.s3_prefix } : {},
    var.s3_region == null ? {} : { EDGEFLEET_S3_REGION = var.s3_region },
    var.s3_endpoint_url == null ? {} : { EDGEFLEET_S3_ENDPOINT_URL = var.s3_endpoint_url },
    local.grpc_endpoint == null ? {} : { EDGEFLEET_GRPC_PUBLIC_ENDPOINT = local.grpc_endpoint },
    var.device_mqtt_endpoint == null ? {} : { EDGEFLEET_DEVICE_MQTT_ENDPOINT = var.device_mqtt_endpoint },
    var.mqtt_tls_secret_name == null ? {} : {
      EDGEFLEET_MQTT_TLS_CA   = "/etc/edgefleet/mqtt/ca.crt"
      EDGEFLEET_MQTT_TLS_CERT = "/etc/edgefleet/mqtt/tls.crt"
      EDGEFLEET_MQTT_TLS_KEY  = "/etc/edgefleet/mqtt/tls.key"
    },
    var.grpc_tls_secret_name == null ? {} : {
      EDGEFLEET_GRPC_TLS_CERT      = "/etc/edgefleet/grpc/tls.crt"
      EDGEFLEET_GRPC_TLS_KEY       = "/etc/edgefleet/grpc/tls.key"
      EDGEFLEET_GRPC_TLS_CLIENT_CA = "/etc/edgefleet/grpc/ca.crt"
    },
    var.keys_claim_name == null ? {} : {
      EDGEFLEET_TUF_KEYS_DIR = "${local.data_dir}/keys"
      # Replicas share one repository: none may make a development root of its own.
      EDGEFLEET_TUF_AUTO_INIT = "false"
    },
    var.identity_secret_name == null ? {} : {
      EDGEFLEET_IDENTITY_DIR = "/etc/edgefleet/identity"
      # The CA folder is a read-only secret; the CRL the hub rewrites lives on its writable volume.
      EDGEFLEET_CRL_FILE = "${local.data_dir}/data/crl.pem"
    },
    var.extra_env,
  )

  # What devices are told to fetch artifacts from: the setting, else the gRPC load balancer's name
  # (the provider waits for it; the Service selects pods by label, so this is no cycle).
  grpc_lb = try(
    kubernetes_service_v1.grpc.status[0].load_balancer[0].ingress[0].hostname,
    kubernetes_service_v1.grpc.status[0].load_balancer[0].ingress[0].ip,
    null,
  )
  grpc_endpoint = var.grpc_public_endpoint != null ? var.grpc_public_endpoint : (
    local.grpc_lb == null ? null : "${local.grpc_lb}:${local.grpc_port}"
  )

  # Settings read from the secret: (environment variable, key in the secret, required).
  secret_env = [
    { name = "EDGEFLEET_DATABASE_URL", key = "database-url", optional = false },
    { name = "EDGEFLEET_TUF_ONLINE_PASSPHRASE", key = "tuf-online-passphrase", optional = true },
    { name = "EDGEFLEET_MQTT_PASSWORD", key = "mqtt-password", optional = true },
  ]
}

resource "kubernetes_service_account_v1" "hub" {
  metadata {
    name        = var.name
    namespace   = var.namespace
    labels      = local.labels
    annotations = var.service_account_role_arn == null ? {} : { "eks.amazonaws.com/role-arn" = var.service_account_role_arn }
  }
  # The hub never calls the Kubernetes API; IRSA's web identity token is projected separately.
  automount_service_account_token = false
}

resource "kubernetes_deployment_v1" "hub" {
  # checkov:skip=CKV_K8S_14:the image is a variable whose validation requires a digest
  # checkov:skip=CKV_K8S_43:the image is a variable whose validation requires a digest
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }

  spec {
    replicas = var.replicas
    selector {
      match_labels = local.selector
    }

    strategy {
      type = "RollingUpdate"
      rolling_update {
        max_surge       = "1"
        max_unavailable = "0"
      }
    }

    template {
      metadata {
        labels = local.labels
      }

      spec {
        service_account_name             = kubernetes_service_account_v1.hub.metadata[0].name
        automount_service_account_token  = false
        termination_grace_period_seconds = 30

        security_context {
          run_as_non_root = true
          run_as_user     = var.run_as_user
          run_as_group    = var.run_as_user
          fs_group        = var.run_as_user
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        # Replicas in different zones: one zone's loss leaves the others serving.
        topology_spread_constraint {
          max_skew           = 1
          topology_key       = "topology.kubernetes.io/zone"
          when_unsatisfiable = "ScheduleAnyway"
          label_selector {
            match_labels = local.selector
          }
        }

        container {
          name              = "hub"
          image             = var.image
          image_pull_policy = "Always"
          command           = var.command

          port {
            name           = "http"
            container_port = local.api_port
          }
          port {
            name           = "grpc"
            container_port = local.grpc_port
          }

          dynamic "env" {
            for_each = local.plain_env
            content {
              name  = env.key
              value = env.value
            }
          }

          dynamic "env" {
            for_each = local.secret_env
            content {
              name = env.value.name
              value_from {
                secret_key_ref {
                  name     = var.secret_name
                  key      = env.value.key
                  optional = env.value.optional
                }
              }
            }
          }

          resources {
            requests = {
              cpu    = var.cpu_request
              memory = var.memory_request
            }
            limits = {
              cpu    = var.cpu_limit
              memory = var.memory_limit
            }
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            run_as_user                = var.run_as_user
            capabilities {
              drop = ["ALL"]
            }
          }

          # Opening the database and connecting to the broker come before the API answers.
          startup_probe {
            tcp_socket {
              port = "http"
            }
            period_seconds    = 5
            failure_threshold = 60
          }

          liveness_probe {
            tcp_socket {
              port = "http"
            }
            period_seconds    = 10
            timeout_seconds   = 5
            failure_threshold = 6
          }

          readiness_probe {
            http_get {
              path = "/healthz"
              port = "http"
            }
            period_seconds    = 5
            timeout_seconds   = 3
            failure_threshold = 3
          }

          volume_mount {
            name       = "data"
            mount_path = local.data_dir
          }
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }

          dynamic "volume_mount" {
            for_each = var.keys_claim_name == null ? [] : [1]
            content {
              name       = "keys"
              mount_path = "${local.data_dir}/keys"
            }
          }

          dynamic "volume_mount" {
            for_each = var.grpc_tls_secret_name == null ? [] : [1]
            content {
              name       = "grpc-tls"
              mount_path = "/etc/edgefleet/grpc"
              read_only  = true
            }
          }

          dynamic "volume_mount" {
            for_each = var.mqtt_tls_secret_name == null ? [] : [1]
            content {
              name       = "mqtt-tls"
              mount_path = "/etc/edgefleet/mqtt"
              read_only  = true
            }
          }

          dynamic "volume_mount" {
            for_each = var.identity_secret_name == null ? [] : [1]
            content {
              name       = "identity"
              mount_path = "/etc/edgefleet/identity"
              read_only  = true
            }
          }
        }

        # Scratch only: the CRL and uploads in progress. Nothing here must outlive the pod.
        volume {
          name = "data"
          empty_dir {
            size_limit = "2Gi"
          }
        }
        volume {
          name = "tmp"
          empty_dir {
            size_limit = "1Gi"
          }
        }

        dynamic "volume" {
          for_each = var.keys_claim_name == null ? [] : [var.keys_claim_name]
          content {
            name = "keys"
            persistent_volume_claim {
              claim_name = volume.value
            }
          }
        }

        dynamic "volume" {
          for_each = var.grpc_tls_secret_name == null ? [] : [var.grpc_tls_secret_name]
          content {
            name = "grpc-tls"
            secret {
              secret_name  = volume.value
              default_mode = "0400"
            }
          }
        }

        dynamic "volume" {
          for_each = var.mqtt_tls_secret_name == null ? [] : [var.mqtt_tls_secret_name]
          content {
            name = "mqtt-tls"
            secret {
              secret_name  = volume.value
              default_mode = "0400"
            }
          }
        }

        dynamic "volume" {
          for_each = var.identity_secret_name == null ? [] : [var.identity_secret_name]
          content {
            name = "identity"
            secret {
              secret_name  = volume.value
              default_mode = "0400"
            }
          }
        }
      }
    }
  }

  # The autoscaler owns the replica count once the Deployment exists.
  lifecycle {
    ignore_changes = [spec[0].replicas]

    precondition {
      condition     = var.artifact_store != "s3" || var.s3_bucket != null
      error_message = "artifact_store = \"s3\" needs s3_bucket: expected the object_storage module's bucket_name."
    }
    # Each replica would sign with keys of its own, which devices trust only from one of them.
    precondition {
      condition     = var.keys_claim_name != null || var.max_replicas == 1
      error_message = "several replicas need keys_claim_name: expected a ReadWriteMany claim for the shared signing keys, or max_replicas = 1."
    }
    # Without it each replica would make a fleet CA of its own at its first device provisioning.
    precondition {
      condition     = var.identity_secret_name != null || var.max_replicas == 1
      error_message = "several replicas need identity_secret_name: expected a secret with the fleet CA (ca.key, ca.crt), or max_replicas = 1."
    }
    # Each replica's local folder would hold only the artifacts uploaded through it.
    precondition {
      condition     = var.artifact_store != "local" || (var.replicas == 1 && var.max_replicas == 1)
      error_message = "artifact_store = \"local\" works with one replica only: expected replicas = max_replicas = 1, or artifact_store = \"s3\"."
    }
  }
}

resource "kubernetes_service_v1" "api" {
  metadata {
    name        = var.name
    namespace   = var.namespace
    labels      = local.labels
    annotations = var.api_service_annotations
  }
  spec {
    type     = var.api_service_type
    selector = local.selector
    port {
      name        = "http"
      port        = 80
      target_port = "http"
    }
  }
}

resource "kubernetes_service_v1" "grpc" {
  metadata {
    name        = "${var.name}-grpc"
    namespace   = var.namespace
    labels      = local.labels
    annotations = var.grpc_service_annotations
  }
  spec {
    type     = var.grpc_service_type
    selector = local.selector
    port {
      name        = "grpc"
      port        = local.grpc_port
      target_port = "grpc"
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "hub" {
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }
  spec {
    min_replicas = var.replicas
    max_replicas = var.max_replicas
    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_deployment_v1.hub.metadata[0].name
    }
    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = var.target_cpu_percent
        }
      }
    }
    # Scale down slowly: a reconnect storm comes in waves, and a replica removed between two waves
    # would hand its share back to the broker's queue.
    behavior {
      scale_down {
        stabilization_window_seconds = 300
        select_policy                = "Max"
        policy {
          type           = "Pods"
          value          = 1
          period_seconds = 60
        }
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "hub" {
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }
  spec {
    max_unavailable = "1"
    selector {
      match_labels = local.selector
    }
  }
}
