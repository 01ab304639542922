# syntax=docker/dockerfile:1
# One image for both subcommands: tokenwarden controller | issuer. (The dev mode and the load tool are
# ./cmd/tokenwarden-dev, which the image does not build.)
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
