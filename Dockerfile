# Build: docker build --build-arg VERSION=0.3.0 --build-arg REVISION=$(git rev-parse HEAD) -t glockd:0.3.0 .
#        (scripts/release.sh VERSION does this; without the arguments the
#        image reports the source's version and an unknown revision)
# Run:   docker run -p 127.0.0.1:9999:9999 -p 127.0.0.1:9998:9998 glockd:0.3.0 -dump=false -registry=false -verbose=true
FROM golang:1.26-bookworm AS build
ARG VERSION=
ARG REVISION=unknown
WORKDIR /src
COPY go.mod go.sum ./
COPY client/go.mod client/go.sum ./client/
RUN go mod download
COPY . .
# A static binary: the runtime image has no libc. The .git directory is not
# copied, so the revision comes from REVISION.
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags="-s -w -X main.revision=${REVISION} ${VERSION:+-X main.version=${VERSION}}" \
    -o /out/glockd .

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=
ARG REVISION=unknown
LABEL org.opencontainers.image.title="glockd" \
      org.opencontainers.image.description="Network lock daemon" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/glockd/glockd"
COPY --from=build /out/glockd /usr/local/bin/glockd
USER nonroot:nonroot
EXPOSE 9999 9998
# distroless has no shell and no curl: the binary checks its own /healthz.
# With -ws 0 or -ws-tls, override it (docker run --health-cmd, or
# HEALTHCHECK NONE in a derived image).
HEALTHCHECK --interval=10s --timeout=6s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/glockd", "-healthcheck", "http://127.0.0.1:9998/healthz"]
ENTRYPOINT ["/usr/local/bin/glockd"]
