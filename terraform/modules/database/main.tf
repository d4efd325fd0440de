# RDS PostgreSQL for the hub: private, encrypted with its own key, TLS required, backed up, and
# protected from deletion. IAM authentication is on, so people can get short-lived logins instead
# of sharing the master password (which lives in Secrets Manager, see the secrets module).

locals {
  tags   = merge(var.tags, { "edgefleet/module" = "database" })
  family = "postgres${split(".", var.engine_version)[0]}"
}

module "db_key" {
  source = "../kms_key"

  description = "${var.name} PostgreSQL storage, snapshots and Performance Insights"
  tags        = local.tags
}

resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-"
  subnet_ids  = var.subnet_ids
  tags        = local.tags
}

resource "aws_security_group" "db" {
  name_prefix = "${var.name}-db-"
  description = "PostgreSQL for the edgefleet hub: 5432 from the cluster only"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "postgres" {
  for_each = toset(var.allowed_security_group_ids)

  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-"
  family      = local.family
  description = "edgefleet hub: TLS only, connection and slow-query logging"
  tags        = local.tags

  # The database URL the hub gets carries a password: refuse any connection that would send it in clear.
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  # Statements slower than 1 s: ingest batches and rollups should never take that long.
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  lifecycle {
    create_before_destroy = true
  }
}

module "monitoring_role" {
  source = "../service_role"

  name_prefix          = "${var.name}-rds-mon-"
  service              = "monitoring.rds.amazonaws.com"
  aws_managed_policies = ["service-role/AmazonRDSEnhancedMonitoringRole"]
  tags                 = local.tags
}

resource "aws_db_instance" "this" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  db_name                             = var.database_name
  username                            = var.master_username
  password                            = var.master_password
  iam_database_authentication_enabled = true

  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = var.max_allocated_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = module.db_key.arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  publicly_accessible    = false
  multi_az               = var.multi_az

  backup_retention_period   = var.backup_retention_days
  backup_window             = "03:00-04:00"
  maintenance_window        = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-final"

  auto_minor_version_upgrade      = true
  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]
  monitoring_interval             = 30
  monitoring_role_arn             = module.monitoring_role.arn

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = module.db_key.arn
  performance_insights_retention_period = 7

  tags = local.tags

  depends_on = [module.monitoring_role]
}
