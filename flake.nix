{
  description = "envbuild: reproducible, cached environments for testing OpenStack rolling upgrades";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in {
      packages = forAll (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "envbuild";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # The behaviour tests start nginx and keystone from PyPI: they need the network and
          # run in CI (.ci/run), not in the sandbox.
          doCheck = false;
        };
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo rustc rustfmt clippy
            nginx
            (python3.withPackages (ps: [ ps.pip ]))
            qemu qemu-utils libvirt
            git
          ];
        };
      });
    };
}
