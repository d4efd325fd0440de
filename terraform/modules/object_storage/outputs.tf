output "bucket_name" {
  description = "The artifact bucket (EDGEFLEET_S3_BUCKET)."
  value       = aws_s3_bucket.artifacts.id
}

output "bucket_arn" {
  description = "The artifact bucket's ARN."
  value       = aws_s3_bucket.artifacts.arn
}

output "bucket_region" {
  description = "The bucket's region (EDGEFLEET_S3_REGION)."
  value       = aws_s3_bucket.artifacts.region
}

output "kms_key_arn" {
  description = "The key that encrypts the artifacts."
  value       = module.artifacts_key.arn
}

output "hub_access_policy_arn" {
  description = "An IAM policy granting the hub read and write on the artifacts (attach it to the hub's IRSA role)."
  value       = aws_iam_policy.hub_access.arn
}
