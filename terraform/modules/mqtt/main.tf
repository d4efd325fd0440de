# The MQTT broker cluster: EMQX from its Helm chart (shared subscriptions for hub replicas,
# clustering without a home-made layer), or a managed service whose endpoint passes through.
#
# Devices reach only the TLS listener, through a load balancer of our own that exposes 8883 and
# nothing else (the chart's service also carries the dashboard and the management API).
# Client certificates are required and their CN becomes the MQTT username, so the authorization
# rules below give each device its own topics, as deploy/mosquitto/edgefleet.acl does for Mosquitto.

locals {
  install   = !var.use_managed_service
  app_name  = "emqx"
  cert_path = "/tmp/ssl"

  # File authorization, first match wins; ${username} is the client certificate's CN.
  acl_rules = join("\n", [
    "{allow, {username, \"edgefleet-hub\"}, subscribe, [\"ef/v1/+/dev/+/status\", \"ef/v1/+/dev/+/telemetry\", \"ef/v1/+/dev/+/sketch\", \"ef/v1/+/dev/+/events\", \"ef/v1/+/dev/+/desired\"]}.",
    "{allow, {username, \"edgefleet-hub\"}, publish, [\"ef/v1/+/dev/+/desired\", \"ef/v1/+/dev/+/cmd\"]}.",
    "{allow, all, publish, [\"ef/v1/+/dev/$${username}/status\", \"ef/v1/+/dev/$${username}/telemetry\", \"ef/v1/+/dev/$${username}/sketch\", \"ef/v1/+/dev/$${username}/events\"]}.",
    "{allow, all, subscribe, [\"ef/v1/+/dev/$${username}/desired\", \"ef/v1/+/dev/$${username}/cmd\"]}.",
    "{deny, all}.",
  ])

  emqx_config = {
    EMQX_CLUSTER__DISCOVERY_STRATEGY = "k8s"
    EMQX_CLUSTER__K8S__APISERVER     = "https://kubernetes.default.svc:443"
    EMQX_CLUSTER__K8S__SERVICE_NAME  = "${var.release_name}-headless"
    EMQX_CLUSTER__K8S__NAMESPACE     = var.namespace
    EMQX_CLUSTER__K8S__ADDRESS_TYPE  = "hostname"
    EMQX_CLUSTER__K8S__SUFFIX        = "svc.cluster.local"

    EMQX_LISTENERS__TCP__DEFAULT__ENABLE                            = tostring(var.plain_listener_enabled)
    EMQX_LISTENERS__SSL__DEFAULT__BIND                              = "0.0.0.0:8883"
    EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__CERTFILE             = "${local.cert_path}/tls.crt"
    EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__KEYFILE              = "${local.cert_path}/tls.key"
    EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__CACERTFILE           = "${local.cert_path}/ca.crt"
    EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__VERIFY               = var.require_client_certificates ? "verify_peer" : "verify_none"
    EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__FAIL_IF_NO_PEER_CERT = tostring(var.require_client_certificates)
    EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__VERSIONS             = "[tlsv1.3, tlsv1.2]"
    EMQX_MQTT__PEER_CERT_AS_USERNAME                                = "cn"

    EMQX_AUTHORIZATION__NO_MATCH      = "deny"
    EMQX_AUTHORIZATION__DENY_ACTION   = "disconnect"
    EMQX_AUTHORIZATION__CACHE__ENABLE = "true"
    EMQX_AUTHORIZATION__SOURCES       = "[{type = file, enable = true, rules = \"\"\"${local.acl_rules}\"\"\"}]"

    # The hub's shared subscription must absorb a reconnect storm of the whole fleet (docs/capacity.md).
    EMQX_MQTT__MAX_MQUEUE_LEN      = tostring(var.max_mqueue_len)
    EMQX_MQTT__MAX_PACKET_SIZE     = "256KB"
    EMQX_MQTT__SERVER_KEEPALIVE    = "120"
    EMQX_MQTT__RETAIN_AVAILABLE    = "true"
    EMQX_MQTT__SHARED_SUBSCRIPTION = "true"

    # The chart's default ("public") is removed here; the real one comes from the secret below.
    EMQX_DASHBOARD__DEFAULT_USERNAME = "admin"
    EMQX_DASHBOARD__DEFAULT_PASSWORD = null
  }
}

resource "kubernetes_namespace_v1" "emqx" {
  count = local.install ? 1 : 0

  metadata {
    name = var.namespace
  }
}

resource "kubernetes_secret_v1" "tls" {
  count = local.install ? 1 : 0

  metadata {
    name      = "${var.release_name}-tls"
    namespace = kubernetes_namespace_v1.emqx[0].metadata[0].name
  }
  type = "kubernetes.io/tls"
  data = {
    "tls.crt" = var.server_cert_pem
    "tls.key" = var.server_key_pem
    "ca.crt"  = var.client_ca_pem
  }

  lifecycle {
    precondition {
      condition     = var.server_cert_pem != null && var.client_ca_pem != null
      error_message = "EMQX needs its TLS material: expected server_cert_pem, server_key_pem and client_ca_pem (or use_managed_service = true)."
    }
  }
}

resource "random_password" "dashboard" {
  count = local.install ? 1 : 0

  length  = 32
  special = false
}

# EMQX reads its environment from the chart's ConfigMap first and this secret last, so the
# password here replaces any default.
resource "kubernetes_secret_v1" "env" {
  count = local.install ? 1 : 0

  metadata {
    name      = "${var.release_name}-env-secret"
    namespace = kubernetes_namespace_v1.emqx[0].metadata[0].name
  }
  data = {
    EMQX_DASHBOARD__DEFAULT_PASSWORD = random_password.dashboard[0].result
  }
}

resource "helm_release" "emqx" {
  count = local.install ? 1 : 0

  name       = var.release_name
  namespace  = kubernetes_namespace_v1.emqx[0].metadata[0].name
  repository = "https://repos.emqx.io/charts"
  chart      = "emqx"
  version    = var.chart_version
  atomic     = true
  timeout    = 900

  values = [yamlencode({
    replicaCount  = var.cluster_size
    envFromSecret = kubernetes_secret_v1.env[0].metadata[0].name
    emqxConfig    = local.emqx_config
    # The chart mounts this secret at /tmp/ssl when ssl.enabled and useExisting are set.
    ssl = {
      enabled      = true
      useExisting  = true
      existingName = kubernetes_secret_v1.tls[0].metadata[0].name
    }
    service = {
      type = "ClusterIP"
    }
    persistence = {
      enabled          = true
      size             = var.persistence_size
      storageClassName = var.storage_class == null ? "" : var.storage_class
    }
    resources = {
      requests = { cpu = var.cpu_request, memory = var.memory_request }
      limits   = { cpu = var.cpu_limit, memory = var.memory_request }
    }
    # One node per host: a host's loss costs the cluster one member, not a quorum.
    affinity = {
      podAntiAffinity = {
        preferredDuringSchedulingIgnoredDuringExecution = [{
          weight = 100
          podAffinityTerm = {
            topologyKey = "kubernetes.io/hostname"
            labelSelector = {
              matchLabels = {
                "app.kubernetes.io/name"     = local.app_name
                "app.kubernetes.io/instance" = var.release_name
              }
            }
          }
        }]
      }
    }
  })]
}

resource "kubernetes_service_v1" "mqtts" {
  count = local.install ? 1 : 0

  metadata {
    name        = "${var.release_name}-mqtts"
    namespace   = kubernetes_namespace_v1.emqx[0].metadata[0].name
    annotations = var.service_annotations
  }

  spec {
    type = var.service_type
    selector = {
      "app.kubernetes.io/name"     = local.app_name
      "app.kubernetes.io/instance" = var.release_name
    }
    port {
      name        = "mqtts"
      port        = 8883
      target_port = 8883
      protocol    = "TCP"
    }
    # A device keeps one long connection: keep it on the node it first reached.
    external_traffic_policy = var.service_type == "ClusterIP" ? null : "Local"
  }

  depends_on = [helm_release.emqx]
}
