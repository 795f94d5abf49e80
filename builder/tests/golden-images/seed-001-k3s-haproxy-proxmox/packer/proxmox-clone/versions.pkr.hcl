# For Packer >= 1.10: `packer init` installs these plugins. Kept out of muster.pkr.hcl so
# that file also validates under older Packer (Debian's 1.6.6 rejects required_plugins).
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    proxmox = {
      source  = "github.com/hashicorp/proxmox"
      version = ">= 1.1.8"
    }
  }
}
