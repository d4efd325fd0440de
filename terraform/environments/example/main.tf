# One edgefleet hub deployment on AWS: network, EKS, PostgreSQL, the artifact bucket, secrets,
# the EMQX broker cluster and the hub itself. Module outputs are the only wiring between parts.

locals {
  hub_namespace = "edgefleet"
  hub_sa_name   = "edgefleet-hub"

  fleet_ca_key = sensitive(file(var.fleet_ca_key_file))
}

module "network" {
  source = "../../modules/network"

  name               = var.name
  cidr_block         = var.vpc_cidr
  availability_zones = var.availability_zones
  single_nat_gateway = var.single_nat_gateway
}

module "kubernetes_cluster" {
  source = "../../modules/kubernetes_cluster"

  name                   = var.name
  kubernetes_version     = var.kubernetes_version
  subnet_ids             = module.network.private_subnet_ids
  endpoint_public_access = var.cluster_endpoint_public_access
  public_access_cidrs    = var.cluster_public_access_cidrs
  node_instance_types    = var.node_instance_types
  node_min_size          = var.node_min_size
  node_desired_size      = var.node_desired_size
  node_max_size          = var.node_max_size
}

module "secrets" {
  source = "../../modules/secrets"

  name              = var.name
  fleet_ca_key_pem  = local.fleet_ca_key
  fleet_ca_cert_pem = file(var.fleet_ca_cert_file)
}

module "database" {
  source = "../../modules/database"

  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.kubernetes_cluster.cluster_security_group_id]
  instance_class             = var.db_instance_class
  multi_az                   = var.db_multi_az
  backup_retention_days      = var.db_backup_retention_days
  deletion_protection        = var.db_deletion_protection
  master_password            = module.secrets.db_password
}

module "shared_files" {
  source = "../../modules/shared_files"

  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.kubernetes_cluster.cluster_security_group_id]
}

module "object_storage" {
  source = "../../modules/object_storage"

  bucket_name       = var.artifact_bucket_name
  access_log_bucket = var.artifact_access_log_bucket
}

# EKS's default class makes unencrypted gp2 volumes; the broker's data gets encrypted gp3.
resource "kubernetes_storage_class_v1" "encrypted_gp3" {
  metadata {
    name = "gp3-encrypted"
  }
  storage_provisioner    = "ebs.csi.aws.com"
  reclaim_policy         = "Delete"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  parameters = {
    type      = "gp3"
    encrypted = "true"
  }

  depends_on = [module.kubernetes_cluster]
}

module "mqtt" {
  source = "../../modules/mqtt"

  use_managed_service = var.mqtt_use_managed_service
  managed_host        = var.mqtt_managed_host
  chart_version       = var.emqx_chart_version
  cluster_size        = var.mqtt_cluster_size
  storage_class       = kubernetes_storage_class_v1.encrypted_gp3.metadata[0].name
  server_cert_pem     = var.mqtt_server_cert_file == null ? null : file(var.mqtt_server_cert_file)
  server_key_pem      = var.mqtt_server_key_file == null ? null : sensitive(file(var.mqtt_server_key_file))
  client_ca_pem       = file(var.fleet_ca_cert_file)
  service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type"            = "external"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type" = "ip"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"          = "internet-facing"
  }

  depends_on = [module.kubernetes_cluster]
}

# The hub's IAM role, assumed by its service account alone (IRSA): the artifact bucket and its key.
data "aws_iam_policy_document" "hub_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [module.kubernetes_cluster.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${module.kubernetes_cluster.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${local.hub_namespace}:${local.hub_sa_name}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${module.kubernetes_cluster.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "hub" {
  name_prefix        = "${var.name}-hub-"
  assume_role_policy = data.aws_iam_policy_document.hub_assume.json
}

resource "aws_iam_role_policy_attachment" "hub_artifacts" {
  role       = aws_iam_role.hub.name
  policy_arn = module.object_storage.hub_access_policy_arn
}

# The hub's Kubernetes secrets, made from the values above. A secrets-store CSI driver reading the
# Secrets Manager entries directly (module.secrets.read_policy_arn) is the alternative that keeps
# them out of Kubernetes; docs/terraform.md shows both.
resource "kubernetes_namespace_v1" "hub" {
  metadata {
    name = local.hub_namespace
  }

  depends_on = [module.kubernetes_cluster]
}

resource "kubernetes_secret_v1" "hub" {
  metadata {
    name      = "edgefleet-hub"
    namespace = kubernetes_namespace_v1.hub.metadata[0].name
  }
  data = {
    # sslmode=require: the database refuses clear connections (rds.force_ssl) in any case.
    "database-url" = format(
      "postgresql+psycopg://%s:%s@%s:%d/%s?sslmode=require",
      module.database.username, module.secrets.db_password, module.database.address,
      module.database.port, module.database.database_name,
    )
    "tuf-online-passphrase" = module.secrets.tuf_online_passphrase
  }
}

resource "kubernetes_secret_v1" "hub_mqtt_tls" {
  metadata {
    name      = "edgefleet-hub-mqtt-tls"
    namespace = kubernetes_namespace_v1.hub.metadata[0].name
  }
  data = {
    "ca.crt"  = file(var.fleet_ca_cert_file)
    "tls.crt" = file(var.hub_mqtt_cert_file)
    "tls.key" = sensitive(file(var.hub_mqtt_key_file))
  }
}

resource "kubernetes_secret_v1" "hub_grpc_tls" {
  metadata {
    name      = "edgefleet-hub-grpc-tls"
    namespace = kubernetes_namespace_v1.hub.metadata[0].name
  }
  data = {
    "ca.crt"  = file(var.fleet_ca_cert_file)
    "tls.crt" = file(var.hub_grpc_cert_file)
    "tls.key" = sensitive(file(var.hub_grpc_key_file))
  }
}

resource "kubernetes_secret_v1" "fleet_ca" {
  metadata {
    name      = "edgefleet-fleet-ca"
    namespace = kubernetes_namespace_v1.hub.metadata[0].name
  }
  data = {
    "ca.key" = local.fleet_ca_key
    "ca.crt" = file(var.fleet_ca_cert_file)
  }
}

# The replicas' shared signing keys: the EFS access point, mounted through the EFS CSI driver.
resource "kubernetes_persistent_volume_v1" "hub_keys" {
  metadata {
    name = "${var.name}-hub-keys"
  }
  spec {
    capacity = {
      storage = "1Gi"
    }
    access_modes                     = ["ReadWriteMany"]
    persistent_volume_reclaim_policy = "Retain"
    storage_class_name               = "efs-static"
    persistent_volume_source {
      csi {
        driver        = "efs.csi.aws.com"
        volume_handle = "${module.shared_files.file_system_id}::${module.shared_files.hub_keys_access_point_id}"
      }
    }
  }
}

resource "kubernetes_persistent_volume_claim_v1" "hub_keys" {
  metadata {
    name      = "edgefleet-hub-keys"
    namespace = kubernetes_namespace_v1.hub.metadata[0].name
  }
  spec {
    access_modes       = ["ReadWriteMany"]
    storage_class_name = "efs-static"
    volume_name        = kubernetes_persistent_volume_v1.hub_keys.metadata[0].name
    resources {
      requests = {
        storage = "1Gi"
      }
    }
  }
}

module "hub" {
  source = "../../modules/hub"

  name                     = local.hub_sa_name
  namespace                = kubernetes_namespace_v1.hub.metadata[0].name
  image                    = var.hub_image
  replicas                 = var.hub_replicas
  max_replicas             = var.hub_max_replicas
  fleet                    = var.fleet
  mqtt_host                = module.mqtt.host
  mqtt_port                = module.mqtt.port
  device_mqtt_endpoint     = var.mqtt_device_hostname == null ? module.mqtt.device_endpoint : "${var.mqtt_device_hostname}:${module.mqtt.port}"
  grpc_public_endpoint     = var.hub_grpc_hostname == null ? null : "${var.hub_grpc_hostname}:50051"
  artifact_store           = "s3"
  s3_bucket                = module.object_storage.bucket_name
  s3_region                = module.object_storage.bucket_region
  secret_name              = kubernetes_secret_v1.hub.metadata[0].name
  mqtt_tls_secret_name     = kubernetes_secret_v1.hub_mqtt_tls.metadata[0].name
  grpc_tls_secret_name     = kubernetes_secret_v1.hub_grpc_tls.metadata[0].name
  keys_claim_name          = kubernetes_persistent_volume_claim_v1.hub_keys.metadata[0].name
  identity_secret_name     = kubernetes_secret_v1.fleet_ca.metadata[0].name
  service_account_role_arn = aws_iam_role.hub.arn
  grpc_service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type"            = "external"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type" = "ip"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"          = "internet-facing"
  }
}
