# A customer managed KMS key for one module's data: rotated yearly, administered by the account
# (IAM policies decide who else may use it), and usable by a service only where a statement here
# names it. Each module that encrypts something gets its own key from this module.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
}

resource "aws_kms_key" "this" {
  description         = var.description
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.this.json
  tags                = var.tags
}

resource "aws_kms_alias" "this" {
  count = var.alias == null ? 0 : 1

  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}

data "aws_iam_policy_document" "this" {
  # A key policy's "*" resource is the key it is attached to, nothing else.
  # checkov:skip=CKV_AWS_111:a key policy's "*" resource is this key alone
  # checkov:skip=CKV_AWS_356:a key policy's "*" resource is this key alone
  # checkov:skip=CKV_AWS_109:a key policy's "*" resource is this key alone
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  dynamic "statement" {
    for_each = var.principal_grants
    content {
      sid       = statement.key
      actions   = statement.value.actions
      resources = ["*"]
      principals {
        type        = "AWS"
        identifiers = statement.value.principals
      }
    }
  }

  # CloudWatch Logs encrypts only the log groups named here, in this account and region.
  dynamic "statement" {
    for_each = length(var.cloudwatch_log_groups) > 0 ? [var.cloudwatch_log_groups] : []
    content {
      sid       = "CloudWatchLogsEncrypts"
      actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
      resources = ["*"]
      principals {
        type        = "Service"
        identifiers = ["logs.${local.region}.amazonaws.com"]
      }
      condition {
        test     = "ArnLike"
        variable = "kms:EncryptionContext:aws:logs:arn"
        values   = [for group in statement.value : "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${group}"]
      }
    }
  }
}
