# Build: docker build -t glockd .
# Run:   docker run -p 9999:9999 -p 9998:9998 glockd -dump=false -registry=false -verbose=true
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# A static binary: the runtime image has no libc.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/glockd .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/glockd /usr/local/bin/glockd
USER nonroot:nonroot
EXPOSE 9999 9998
ENTRYPOINT ["/usr/local/bin/glockd"]
