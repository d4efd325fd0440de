# Secrets Manager entries for what the hub must not keep in its image or its data folder.
#
# - db-password: made here, given to the database module; in terraform state (keep state encrypted).
# - tuf-online-passphrase: unlocks the hub's online signing keys (EDGEFLEET_TUF_ONLINE_PASSPHRASE).
# - operator-token: an empty slot. The hub issues tokens and keeps only their digest, so a token
#   cannot be made here; the operator stores the one `fleet tokens create` printed
#   (`aws secretsmanager put-secret-value`), and it never passes through terraform state.
# - fleet-ca-key: the fleet CA's key, from an input; no output ever carries it.

locals {
  tags = merge(var.tags, { "edgefleet/module" = "secrets" })
  # Whether the CA key was given says nothing about the key itself, so it may steer count.
  store_ca = nonsensitive(var.fleet_ca_key_pem != null)

  # The entries, named "<name>/<key>", with their descriptions. None rotates on a timer; the comment
  # on each says why, and what replacing it takes.
  secrets = merge(
    {
      # The hub reads the password at start; rotate with a new apply and a rolling restart (docs/terraform.md).
      "db-password" = "edgefleet hub: PostgreSQL master password"
      # A new passphrase must re-encrypt the online keys (fleet keys), which a rotation function cannot do.
      "tuf-online-passphrase" = "edgefleet hub: passphrase of the online TUF signing keys"
      # Tokens are issued by the hub; rotate with fleet tokens create and revoke.
      "operator-token" = "edgefleet hub: operator API token (value put by the operator, never by terraform)"
    },
    # A new CA key means re-issuing every device certificate; a planned procedure, not a timer.
    local.store_ca ? { "fleet-ca" = "edgefleet fleet CA: private key and certificate (PEM)" } : {},
  )
}

module "secrets_key" {
  source = "../kms_key"

  description = "${var.name} secrets"
  tags        = local.tags
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

resource "aws_secretsmanager_secret" "this" {
  # checkov:skip=CKV2_AWS_57:none of these entries rotates on a timer; local.secrets says why for each
  for_each = local.secrets

  name                    = "${var.name}/${each.key}"
  description             = each.value
  kms_key_id              = module.secrets_key.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "db_password" {
  secret_id     = aws_secretsmanager_secret.this["db-password"].id
  secret_string = random_password.db.result
}

resource "aws_secretsmanager_secret_version" "tuf_online_passphrase" {
  secret_id     = aws_secretsmanager_secret.this["tuf-online-passphrase"].id
  secret_string = random_password.tuf_online.result
}

resource "aws_secretsmanager_secret_version" "fleet_ca_key" {
  count = local.store_ca ? 1 : 0

  secret_id = aws_secretsmanager_secret.this["fleet-ca"].id
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
    sid       = "ReadHubSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [for secret in aws_secretsmanager_secret.this : secret.arn]
  }

  statement {
    sid       = "DecryptHubSecrets"
    actions   = ["kms:Decrypt"]
    resources = [module.secrets_key.arn]
  }
}

resource "aws_iam_policy" "read" {
  name_prefix = "${var.name}-secrets-read-"
  description = "Read the edgefleet hub's secrets"
  policy      = data.aws_iam_policy_document.read.json
  tags        = local.tags
}
