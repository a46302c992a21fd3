# Multi-stage build: compile in the Rust image, run in a slim Debian with a non-root user.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin voxrelay

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/voxrelay --create-home voxrelay
COPY --from=build /src/target/release/voxrelay /usr/local/bin/voxrelay
COPY config /etc/voxrelay
WORKDIR /var/lib/voxrelay
USER voxrelay
# In a container the relay must listen on all interfaces; set VOXRELAY__SIP__EXTERNAL_IP to the
# address callers reach (the host's), and VOXRELAY__ADMIN__TOKEN since admin is then public.
# A public SIP listen also needs to know who may call, or the relay refuses to start: set
# VOXRELAY__TRUNKS='[{name = "main", addresses = ["203.0.113.0/24"]}]' (your provider's
# addresses), or VOXRELAY__SIP__ALLOW_ANY_SOURCE=true behind a firewall or SBC that filters.
ENV VOXRELAY__SIP__LISTEN=0.0.0.0:5060 \
    VOXRELAY__ADMIN__LISTEN=0.0.0.0:8080 \
    VOXRELAY__AGENTS__DIR=/etc/voxrelay/agents \
    VOXRELAY__BOOKING__DATABASE_URL=sqlite:///var/lib/voxrelay/voxrelay.db
EXPOSE 5060/udp 5060/tcp 8080/tcp 20000-20999/udp
ENTRYPOINT ["voxrelay"]
CMD ["serve", "--config", "/etc/voxrelay/voxrelay.toml"]
