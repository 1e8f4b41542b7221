# One image for every castway service; the command picks the component
# (castway serve | ingest | origin | worker | scheduler run). libsrt: SRT ingest
# (CASTWAY_SRT_PORT, UDP; off unless set).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm libsrt1.5-gnutls \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app
# hls.js from the npm registry into origin/static/vendor, then castway itself.
RUN sh web/install.sh && pip install --no-cache-dir . && rm -rf web/node_modules

ARG CASTWAY_VERSION=dev
ENV CASTWAY_HOST=0.0.0.0 \
    CASTWAY_DATA_DIR=/data \
    CASTWAY_IMAGE_VERSION=${CASTWAY_VERSION} \
    PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 1935 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["castway"]
CMD ["serve"]
