# State moves: the flow logs' key and role now live in the kms_key and service_role modules. These
# blocks keep the existing objects instead of destroying them and making new ones. Keep them until
# every deployment has applied them.

moved {
  from = aws_kms_key.flow_logs
  to   = module.flow_logs_key.aws_kms_key.this
}

moved {
  from = aws_iam_role.flow_logs
  to   = module.flow_logs_role.aws_iam_role.this
}
