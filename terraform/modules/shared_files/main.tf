# A small shared file system (EFS) for what the hub's replicas must share on disk: the update
# repository's online signing keys (EDGEFLEET_TUF_KEYS_DIR). Replicas rotate and read the same
# keys, so each one's own disk would not do; the database holds everything else.

locals {
  tags = merge(var.tags, { "edgefleet/module" = "shared_files" })
}

module "files_key" {
  source = "../kms_key"

  description = "${var.name} shared files"
  tags        = local.tags
}

resource "aws_efs_file_system" "this" {
  creation_token   = "${var.name}-shared"
  encrypted        = true
  kms_key_id       = module.files_key.arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"
  tags             = merge(local.tags, { Name = "${var.name}-shared" })
}

resource "aws_efs_backup_policy" "this" {
  file_system_id = aws_efs_file_system.this.id
  backup_policy {
    status = "ENABLED"
  }
}

# Only TLS mounts: the EFS CSI driver mounts with encryption in transit by default.
data "aws_iam_policy_document" "file_system" {
  statement {
    sid       = "DenyUnencryptedTransport"
    effect    = "Deny"
    actions   = ["*"]
    resources = [aws_efs_file_system.this.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_efs_file_system_policy" "this" {
  file_system_id = aws_efs_file_system.this.id
  policy         = data.aws_iam_policy_document.file_system.json
}

resource "aws_security_group" "files" {
  name_prefix = "${var.name}-efs-"
  description = "EFS for the edgefleet hub: NFS from the cluster only"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "nfs" {
  for_each = toset(var.allowed_security_group_ids)

  security_group_id            = aws_security_group.files.id
  description                  = "NFS from ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  referenced_security_group_id = each.value
}

resource "aws_efs_mount_target" "this" {
  count = length(var.subnet_ids)

  file_system_id  = aws_efs_file_system.this.id
  subnet_id       = var.subnet_ids[count.index]
  security_groups = [aws_security_group.files.id]
}

# The hub sees only its own folder, owned by its user, whatever uid the pod claims.
resource "aws_efs_access_point" "hub_keys" {
  file_system_id = aws_efs_file_system.this.id

  posix_user {
    uid = var.posix_uid
    gid = var.posix_uid
  }

  root_directory {
    path = "/edgefleet/keys"
    creation_info {
      owner_uid   = var.posix_uid
      owner_gid   = var.posix_uid
      permissions = "0700"
    }
  }

  tags = local.tags
}
