# The driver image for users with a container engine. scripts/image.sh
# builds the same contents here without one (an OCI archive for
# `ctr images import`); keep the two in step.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libdevmapper-dev libclang-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p dmraid-node -p dmraid-controller --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends dmsetup e2fsprogs xfsprogs util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/dmraid-csi /src/target/release/dmraid-csi-controller /usr/bin/
ENTRYPOINT ["/usr/bin/dmraid-csi"]
