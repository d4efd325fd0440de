# State moves: the key and the monitoring role now live in the kms_key and service_role modules.
# These blocks keep the existing objects instead of destroying them and making new ones (a new key
# would replace the database). Keep them until every deployment has applied them.

moved {
  from = aws_kms_key.db
  to   = module.db_key.aws_kms_key.this
}

moved {
  from = aws_iam_role.monitoring
  to   = module.monitoring_role.aws_iam_role.this
}

moved {
  from = aws_iam_role_policy_attachment.monitoring
  to   = module.monitoring_role.aws_iam_role_policy_attachment.this["service-role/AmazonRDSEnhancedMonitoringRole"]
}
