'use strict';
// Node.js client for sentiment.v1.SentimentService (Classify, Tokenize,
// GetModelInfo) and the standard grpc.health.v1 Health/Check.
//
//   const { SentimentClient } = require('./sentiment');
//   const client = new SentimentClient('127.0.0.1:50051');
//   const { results } = await client.classify(['I love it', 'I hate it']);
//   console.log(results[0].label, results[0].score, await client.health());
//   client.close();
//
// Messages keep the .proto field names (snake_case), enums are their names and
// uint64 fields are numbers: the same shapes as the Python client's results.

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEFAULT_TARGET = '127.0.0.1:50051';
const API_KEY_HEADER = 'x-api-key';
// The one copy of the contract, at the root of the repository.
const CONTRACT_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const HEALTH_ROOT = path.join(__dirname, 'proto');
const LOADER_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, arrays: true };

// Retry UNAVAILABLE (a front-end restarting or draining) within the call's
// deadline, like the Python client; round_robin spreads calls over every
// address a `dns:///` target resolves to (e.g. a headless Service).
const SERVICE_CONFIG = {
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [
    {
      name: [{ service: 'sentiment.v1.SentimentService' }, { service: 'grpc.health.v1.Health' }],
      retryPolicy: {
        maxAttempts: 3,
        initialBackoff: '0.05s',
        maxBackoff: '1s',
        backoffMultiplier: 2,
        retryableStatusCodes: ['UNAVAILABLE'],
      },
    },
  ],
};

const STRATEGIES = { truncate: 'TRUNCATION_STRATEGY_TRUNCATE', reject: 'TRUNCATION_STRATEGY_REJECT' };

function loadServices(contractRoot = CONTRACT_ROOT) {
  const definition = protoLoader.loadSync(['sentiment/v1/sentiment.proto', 'grpc/health/v1/health.proto'], {
    ...LOADER_OPTIONS,
    includeDirs: [contractRoot, HEALTH_ROOT],
  });
  const root = grpc.loadPackageDefinition(definition);
  return { SentimentService: root.sentiment.v1.SentimentService, Health: root.grpc.health.v1.Health };
}

// TLS when asked for or when any certificate file is given; mTLS with cert + key.
function channelCredentials({ tls = false, caCert, clientCert, clientKey } = {}) {
  if (!(tls || caCert || clientCert || clientKey)) return grpc.credentials.createInsecure();
  if (Boolean(clientCert) !== Boolean(clientKey)) throw new Error('clientCert and clientKey must be given together');
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(caCert), read(clientKey), read(clientCert));
}

class SentimentClient {
  /**
   * @param {string} [target] host:port or a gRPC URI such as dns:///sentiment-headless:50051
   * @param {object} [options] apiKey, timeoutMs, tls, caCert, clientCert, clientKey, contractRoot
   */
  constructor(target = process.env.SENTIMENT_TARGET || DEFAULT_TARGET, options = {}) {
    const {
      apiKey = process.env.SENTIMENT_API_KEY,
      timeoutMs = 1000 * Number(process.env.SENTIMENT_TIMEOUT || 10),
      contractRoot,
      ...tls
    } = options;
    const { SentimentService, Health } = loadServices(contractRoot);
    this.target = target;
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
    this.stub = new SentimentService(target, channelCredentials(tls), {
      'grpc.service_config': JSON.stringify(SERVICE_CONFIG),
    });
    this.healthStub = new Health(target, grpc.credentials.createInsecure(), {
      channelOverride: this.stub.getChannel(),
    });
  }

  _unary(stub, method, request, timeoutMs = this.timeoutMs) {
    const metadata = new grpc.Metadata();
    if (this.apiKey) metadata.set(API_KEY_HEADER, this.apiKey);
    const deadline = new Date(Date.now() + timeoutMs);
    return new Promise((resolve, reject) => {
      stub[method](request, metadata, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
    });
  }

  /** Classify one text or many; resolves to a ClassifyResponse (results in request order). */
  classify(texts, { topK = 0, returnLogits = false, maxLength = 0, truncation = 'truncate', timeoutMs } = {}) {
    const request = {
      texts: [].concat(texts),
      top_k: topK,
      return_logits: returnLogits,
      truncation: { strategy: STRATEGIES[truncation], max_length: maxLength },
    };
    return this._unary(this.stub, 'Classify', request, timeoutMs);
  }

  tokenize(texts, { pad = false, maxLength = 0, timeoutMs } = {}) {
    const request = { texts: [].concat(texts), pad, truncation: { strategy: STRATEGIES.truncate, max_length: maxLength } };
    return this._unary(this.stub, 'Tokenize', request, timeoutMs);
  }

  modelInfo({ timeoutMs } = {}) {
    return this._unary(this.stub, 'GetModelInfo', {}, timeoutMs);
  }

  /** grpc.health.v1 status name: "SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN". */
  async health(service = '', { timeoutMs } = {}) {
    const response = await this._unary(this.healthStub, 'Check', { service }, timeoutMs);
    return response.status;
  }

  close() {
    this.stub.close();
  }
}

module.exports = { SentimentClient, loadServices, channelCredentials, DEFAULT_TARGET };
