# Capstan node image: nothing but the static binaries. Built by `make image`
# with ./bin as the context (CGO_ENABLED=0 build, so no libc is needed).
# No builder stage and no `# syntax=` line: this host cannot pull images.
FROM scratch
COPY capstan capstanctl /
VOLUME ["/data"]
EXPOSE 7070 7071 7072
ENV CAPSTAN_DATA_DIR=/data \
    CAPSTAN_LISTEN=0.0.0.0:7070
HEALTHCHECK --interval=2s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/capstan", "health", "--addr", "127.0.0.1:7070"]
ENTRYPOINT ["/capstan"]
CMD ["serve"]
