# Builds the one stele binary and runs it as an unprivileged user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/stele ./cmd/stele

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/stele /usr/local/bin/stele
# The signing key and checkpoint state live here; mount a volume.
ENV STELE_DATA_DIR=/var/lib/stele \
    STELE_LISTEN=0.0.0.0:8080
VOLUME /var/lib/stele
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/stele"]
CMD ["server", "--log-format", "json"]
