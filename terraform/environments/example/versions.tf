terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.35"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }

  # State holds the database password and the TLS keys given as files: keep it in an encrypted,
  # access-controlled backend, for example
  #   backend "s3" { bucket = "...", key = "edgefleet/example.tfstate", region = "...", encrypt = true, use_lockfile = true }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = merge(var.tags, { "edgefleet/environment" = var.name })
  }
}

# Both providers authenticate with a short-lived token from the AWS CLI, never a stored kubeconfig.
provider "kubernetes" {
  host                   = module.kubernetes_cluster.cluster_endpoint
  cluster_ca_certificate = module.kubernetes_cluster.cluster_ca_certificate
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.kubernetes_cluster.cluster_name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes {
    host                   = module.kubernetes_cluster.cluster_endpoint
    cluster_ca_certificate = module.kubernetes_cluster.cluster_ca_certificate
    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.kubernetes_cluster.cluster_name, "--region", var.region]
    }
  }
}
