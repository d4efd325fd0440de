# An IAM role that one AWS service assumes (EKS, EC2 for the nodes, RDS monitoring, VPC flow
# logs), with the AWS managed policies it needs. What a caller grants beyond those it attaches to
# the role itself (an inline policy on the role's name).

data "aws_partition" "current" {}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = var.assume_actions
    principals {
      type        = "Service"
      identifiers = [var.service]
    }
  }
}

resource "aws_iam_role" "this" {
  name_prefix        = var.name_prefix
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "this" {
  for_each = toset(var.aws_managed_policies)

  role       = aws_iam_role.this.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}
