# Secrets Manager entries for what the hub must not keep in its image or its data folder.
#
# - db-password: made here, given to the database module; in terraform state (keep state encrypted).
# - tuf-online-passphrase: unlocks the hub's online signing keys (EDGEFLEET_TUF_ONLINE_PASSPHRASE).
# - operator-token: an empty slot. The hub issues tokens and keeps only their digest, so a token
#   cannot be made here; the operator stores the one `fleet tokens create` printed
#   (`aws secretsmanager put-secret-value`), and it never passes through terraform state.
# - fleet-ca-key: the fleet CA's key, from an input; no output ever carries it.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  partition = data.aws_partition.current.partition
  tags      = merge(var.tags, { "edgefleet/module" = "secrets" })
  # Whether the CA key was given says nothing about the key itself, so it may steer count.
  store_ca = nonsensitive(var.fleet_ca_key_pem != null)
}

resource "aws_kms_key" "secrets" {
  description         = "${var.name} secrets"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.secrets_key.json
  tags                = local.tags
}

data "aws_iam_policy_document" "secrets_key" {
  # checkov:skip=CKV_AWS_111:a key policy's "*" resource is this key alone
  # checkov:skip=CKV_AWS_356:a key policy's "*" resource is this key alone
  # checkov:skip=CKV_AWS_109:a key policy's "*" resource is this key alone
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

# URL-unreserved specials only: the password goes into EDGEFLEET_DATABASE_URL without escaping,
# and RDS refuses '/', '@', '"' and spaces.
resource "random_password" "db" {
  length           = 40
  special          = true
  override_special = "-_.~"
}

resource "random_password" "tuf_online" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "db_password" {
  # checkov:skip=CKV2_AWS_57:the hub reads the password at start; rotate with a new apply and a rolling restart (docs/terraform.md)
  name                    = "${var.name}/db-password"
  description             = "edgefleet hub: PostgreSQL master password"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "db_password" {
  secret_id     = aws_secretsmanager_secret.db_password.id
  secret_string = random_password.db.result
}

resource "aws_secretsmanager_secret" "tuf_online_passphrase" {
  # checkov:skip=CKV2_AWS_57:a new passphrase must re-encrypt the online keys (fleet keys), which a rotation function cannot do
  name                    = "${var.name}/tuf-online-passphrase"
  description             = "edgefleet hub: passphrase of the online TUF signing keys"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "tuf_online_passphrase" {
  secret_id     = aws_secretsmanager_secret.tuf_online_passphrase.id
  secret_string = random_password.tuf_online.result
}

resource "aws_secretsmanager_secret" "operator_token" {
  # checkov:skip=CKV2_AWS_57:tokens are issued by the hub; rotate with fleet tokens create and revoke
  name                    = "${var.name}/operator-token"
  description             = "edgefleet hub: operator API token (value put by the operator, never by terraform)"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret" "fleet_ca_key" {
  # checkov:skip=CKV2_AWS_57:a new CA key means re-issuing every device certificate; a planned procedure, not a timer
  count = local.store_ca ? 1 : 0

  name                    = "${var.name}/fleet-ca"
  description             = "edgefleet fleet CA: private key and certificate (PEM)"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "fleet_ca_key" {
  count = local.store_ca ? 1 : 0

  secret_id = aws_secretsmanager_secret.fleet_ca_key[0].id
  secret_string = jsonencode({
    "ca.key" = var.fleet_ca_key_pem
    "ca.crt" = var.fleet_ca_cert_pem
  })

  lifecycle {
    precondition {
      condition     = var.fleet_ca_cert_pem != null
      error_message = "fleet_ca_key_pem was given without fleet_ca_cert_pem: expected both (the hub needs ca.crt next to ca.key)."
    }
  }
}

# For the hub's IRSA role, when a secrets-store CSI driver mounts these instead of a Kubernetes Secret.
data "aws_iam_policy_document" "read" {
  statement {
    sid     = "ReadHubSecrets"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = concat(
      [
        aws_secretsmanager_secret.db_password.arn,
        aws_secretsmanager_secret.tuf_online_passphrase.arn,
        aws_secretsmanager_secret.operator_token.arn,
      ],
      aws_secretsmanager_secret.fleet_ca_key[*].arn,
    )
  }

  statement {
    sid       = "DecryptHubSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.secrets.arn]
  }
}

resource "aws_iam_policy" "read" {
  name_prefix = "${var.name}-secrets-read-"
  description = "Read the edgefleet hub's secrets"
  policy      = data.aws_iam_policy_document.read.json
  tags        = local.tags
}
