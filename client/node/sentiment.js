'use strict';
// Node.js client for sentiment.v1.SentimentService (Classify, Tokenize,
// GetModelInfo, ListModels) and the standard grpc.health.v1 Health/Check.
//
//   const { SentimentClient } = require('./sentiment');
//   const client = new SentimentClient('127.0.0.1:50051');
//   const { results } = await client.classify(['I love it', 'I hate it']);
//   console.log(results[0].label, results[0].score, await client.health());
//   client.close();
//
// Messages keep the .proto field names (snake_case), enums are their names and
// uint64 fields are numbers: the same shapes as the Python client's results.
//
// Long texts as overlapping windows, and text pairs:
//
//   await client.classify([longText], { truncation: 'window', stride: 64, aggregation: 'max', returnWindows: true });
//   await client.classifyPairs([['A man is eating.', 'Someone eats.']]);
//
// Every call that uses a model takes a `model` option (a name from listModels();
// '' or unset: the server's default model; an unknown name fails with NOT_FOUND):
//
//   const { models, default_model } = await client.listModels();
//   await client.classify(['I love it'], { model: models[0].name });

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

const STRATEGIES = {
  truncate: 'TRUNCATION_STRATEGY_TRUNCATE',
  reject: 'TRUNCATION_STRATEGY_REJECT',
  window: 'TRUNCATION_STRATEGY_WINDOW',
};
// undefined: WINDOW_AGGREGATION_UNSPECIFIED, the server's default (mean).
const AGGREGATIONS = {
  mean: 'WINDOW_AGGREGATION_MEAN',
  mean_logits: 'WINDOW_AGGREGATION_MEAN_LOGITS',
  max: 'WINDOW_AGGREGATION_MAX',
};

function lookup(table, name, what) {
  if (!Object.hasOwn(table, name)) throw new TypeError(`unknown ${what} ${JSON.stringify(name)}`);
  return table[name];
}

// `stride` is proto3 optional: protobufjs encodes it only when it is not
// undefined/null, so an unset stride stays unset (the server's default) and 0 is sent as 0.
function truncationOptions({ maxLength = 0, truncation = 'truncate', stride, aggregation } = {}) {
  const options = { strategy: lookup(STRATEGIES, truncation, 'truncation'), max_length: maxLength };
  if (stride !== undefined && stride !== null) options.stride = stride;
  if (aggregation !== undefined) options.aggregation = lookup(AGGREGATIONS, aggregation, 'aggregation');
  return options;
}

// [[text, textPair], ...] -> TextPair messages.
function textPairs(pairs) {
  return pairs.map((pair) => {
    if (!Array.isArray(pair) || pair.length !== 2) {
      throw new TypeError(`each pair must be a [text, textPair] array, got ${JSON.stringify(pair)}`);
    }
    return { text: pair[0], text_pair: pair[1] };
  });
}

/** The ClassifyRequest for texts; truncation 'window' takes stride, aggregation and returnWindows. */
function classifyRequest(
  texts,
  { topK = 0, returnLogits = false, returnWindows = false, model = '', ...truncation } = {},
) {
  return {
    texts: [].concat(texts),
    top_k: topK,
    return_logits: returnLogits,
    truncation: truncationOptions(truncation),
    return_windows: returnWindows,
    model,
  };
}

/** The ClassifyRequest for [text, textPair] pairs (truncation 'truncate' or 'reject'; windows are refused). */
function classifyPairsRequest(
  pairs,
  { topK = 0, returnLogits = false, maxLength = 0, truncation = 'truncate', model = '' } = {},
) {
  return {
    pairs: textPairs(pairs),
    top_k: topK,
    return_logits: returnLogits,
    truncation: truncationOptions({ maxLength, truncation }),
    model,
  };
}

function tokenizeRequest(texts, { pad = false, maxLength = 0, truncation = 'truncate', stride, model = '' } = {}) {
  return { texts: [].concat(texts), pad, truncation: truncationOptions({ maxLength, truncation, stride }), model };
}

function tokenizePairsRequest(pairs, { pad = false, maxLength = 0, truncation = 'truncate', model = '' } = {}) {
  return { pairs: textPairs(pairs), pad, truncation: truncationOptions({ maxLength, truncation }), model };
}

/** The GetModelInfoRequest: `model` '' is the server's default model. */
function modelInfoRequest({ model = '' } = {}) {
  return { model };
}

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

  /**
   * Classify one text or many; resolves to a ClassifyResponse (results in request order).
   * Options: model ('' or unset: the server's default), topK, returnLogits, maxLength,
   * truncation ('truncate' | 'reject' | 'window'), and with 'window':
   * stride (unset: a quarter of a window's text tokens),
   * aggregation ('mean' | 'mean_logits' | 'max'; unset: the server's default, mean) and returnWindows.
   */
  async classify(texts, { timeoutMs, ...options } = {}) {
    return this._unary(this.stub, 'Classify', classifyRequest(texts, options), timeoutMs);
  }

  /** Classify [text, textPair] pairs, one result each. Options: model, topK, returnLogits, maxLength, truncation. */
  async classifyPairs(pairs, { timeoutMs, ...options } = {}) {
    return this._unary(this.stub, 'Classify', classifyPairsRequest(pairs, options), timeoutMs);
  }

  /** Options: model, pad, maxLength, truncation, stride; with 'window' `overflowing` holds the other windows. */
  async tokenize(texts, { timeoutMs, ...options } = {}) {
    return this._unary(this.stub, 'Tokenize', tokenizeRequest(texts, options), timeoutMs);
  }

  async tokenizePairs(pairs, { timeoutMs, ...options } = {}) {
    return this._unary(this.stub, 'Tokenize', tokenizePairsRequest(pairs, options), timeoutMs);
  }

  /** A GetModelInfoResponse for `model` ('' or unset: the server's default model). */
  async modelInfo({ timeoutMs, ...options } = {}) {
    return this._unary(this.stub, 'GetModelInfo', modelInfoRequest(options), timeoutMs);
  }

  /**
   * A ListModelsResponse: `models` sorted by name, each { name, model_version, labels, source_checkpoint, ready },
   * and `default_model`, the one that answers calls without `model`.
   */
  async listModels({ timeoutMs } = {}) {
    return this._unary(this.stub, 'ListModels', {}, timeoutMs);
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

module.exports = {
  SentimentClient,
  loadServices,
  channelCredentials,
  classifyRequest,
  classifyPairsRequest,
  tokenizeRequest,
  tokenizePairsRequest,
  modelInfoRequest,
  DEFAULT_TARGET,
};
