# State moves: the key now lives in the kms_key module. This block keeps the existing key instead
# of destroying it and making a new one. Keep it until every deployment has applied it.

moved {
  from = aws_kms_key.artifacts
  to   = module.artifacts_key.aws_kms_key.this
}
