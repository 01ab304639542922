# syntax=docker/dockerfile:1
# One image for every subcommand: tokenwarden controller | issuer.
FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
COPY issuer/ issuer/
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/tokenwarden ./cmd/tokenwarden

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tokenwarden /tokenwarden
USER 65532:65532
ENTRYPOINT ["/tokenwarden"]
