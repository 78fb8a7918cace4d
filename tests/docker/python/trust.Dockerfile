# Built on every engine start, never cached: this machine's CA bundle (which may change between boots)
# on top of the cached Python stand-in, and a pip.conf that points pip at it.
ARG STANDIN
FROM ${STANDIN}
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip.conf /etc/pip.conf
