# Herald: one image, three roles (`herald serve`, `herald migrate`, `herald demo-agent`).
#   docker build -t herald .        docker compose up
#
# ---- build: the Swift toolchain image of the same Debian release as the runtime
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${SWIFT_IMAGE} AS build
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends \
        libhiredis-dev libcurl4-openssl-dev libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a change to the sources reuses this layer.
# (Package.resolved stays out: .dockerignore; a local one may pin mirror commits.)
COPY Package.swift ./
RUN swift package resolve
COPY . .
# The Swift runtime and Foundation are linked statically: the runtime image
# needs only the C libraries below.
RUN swift build -c release --product herald --static-swift-stdlib \
    && mkdir -p /staging \
    && cp "$(swift build -c release --show-bin-path)/herald" /staging/ \
    && find -L "$(swift build -c release --show-bin-path)" -maxdepth 1 -name '*.resources' -exec cp -Ra {} /staging/ \;

# ---- runtime
FROM ${RUNTIME_IMAGE}
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends \
        libhiredis0.14 libcurl4 libpq5 libstdc++6 zlib1g ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --home-dir /app herald
WORKDIR /app
COPY --from=build --chown=herald:herald /staging /app
ENV PATH=/app:$PATH \
    HERALD_HOST=0.0.0.0 \
    HERALD_PORT=8080
USER herald:herald
EXPOSE 8080 8090
ENTRYPOINT ["herald"]
CMD ["serve"]
