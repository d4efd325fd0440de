# State moves: the key now lives in the kms_key module and the entries under one for_each. These
# blocks keep the existing objects instead of destroying them and making new ones (a deleted
# entry's name stays taken for its recovery window). Keep them until every deployment has applied them.

moved {
  from = aws_kms_key.secrets
  to   = module.secrets_key.aws_kms_key.this
}

moved {
  from = aws_secretsmanager_secret.db_password
  to   = aws_secretsmanager_secret.this["db-password"]
}

moved {
  from = aws_secretsmanager_secret.tuf_online_passphrase
  to   = aws_secretsmanager_secret.this["tuf-online-passphrase"]
}

moved {
  from = aws_secretsmanager_secret.operator_token
  to   = aws_secretsmanager_secret.this["operator-token"]
}

moved {
  from = aws_secretsmanager_secret.fleet_ca_key[0]
  to   = aws_secretsmanager_secret.this["fleet-ca"]
}
