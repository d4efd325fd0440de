# State moves: the key and the cluster's and nodes' roles now live in the kms_key and service_role
# modules. These blocks keep the existing objects instead of destroying them and making new ones.
# Keep them until every deployment has applied them.

moved {
  from = aws_kms_key.cluster
  to   = module.cluster_key.aws_kms_key.this
}

moved {
  from = aws_iam_role.cluster
  to   = module.cluster_role.aws_iam_role.this
}

moved {
  from = aws_iam_role_policy_attachment.cluster
  to   = module.cluster_role.aws_iam_role_policy_attachment.this["AmazonEKSClusterPolicy"]
}

moved {
  from = aws_iam_role.node
  to   = module.node_role.aws_iam_role.this
}

moved {
  from = aws_iam_role_policy_attachment.node["AmazonEKSWorkerNodePolicy"]
  to   = module.node_role.aws_iam_role_policy_attachment.this["AmazonEKSWorkerNodePolicy"]
}

moved {
  from = aws_iam_role_policy_attachment.node["AmazonEKS_CNI_Policy"]
  to   = module.node_role.aws_iam_role_policy_attachment.this["AmazonEKS_CNI_Policy"]
}

moved {
  from = aws_iam_role_policy_attachment.node["AmazonEC2ContainerRegistryReadOnly"]
  to   = module.node_role.aws_iam_role_policy_attachment.this["AmazonEC2ContainerRegistryReadOnly"]
}
