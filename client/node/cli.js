#!/usr/bin/env node
'use strict';
// Command-line client, like the Python `sentiment-client`:
//
//   node client/node/cli.js [--target HOST:PORT] classify [--json] [--top-k N] [--logits] TEXT...
//   node client/node/cli.js [--target HOST:PORT] info
//   node client/node/cli.js [--target HOST:PORT] health [--service NAME]   (exit 0 if SERVING)
//
// Connection flags fall back to SENTIMENT_TARGET, SENTIMENT_API_KEY, SENTIMENT_TIMEOUT,
// SENTIMENT_CLIENT_TLS, SENTIMENT_CLIENT_TLS_CA, SENTIMENT_CLIENT_TLS_CERT and SENTIMENT_CLIENT_TLS_KEY.

const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const { SentimentClient } = require('./sentiment');

const USAGE = `usage: cli.js [--target HOST:PORT] [--api-key KEY] [--timeout SECONDS]
              [--tls] [--ca-cert FILE] [--cert FILE] [--key FILE]
              classify [--json] [--top-k N] [--logits] [--max-length N] TEXT... | info | health [--service NAME]`;

const OPTIONS = {
  target: { type: 'string' },
  'api-key': { type: 'string' },
  timeout: { type: 'string' },
  tls: { type: 'boolean' },
  'ca-cert': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  json: { type: 'boolean', default: false },
  'top-k': { type: 'string', default: '0' },
  logits: { type: 'boolean', default: false },
  'max-length': { type: 'string', default: '0' },
  service: { type: 'string', default: '' },
  help: { type: 'boolean', short: 'h' },
};

function clientFrom(values) {
  const env = process.env;
  const flag = (text) => ['1', 'true', 'yes', 'on'].includes(String(text || '').toLowerCase());
  return new SentimentClient(values.target || env.SENTIMENT_TARGET || undefined, {
    apiKey: values['api-key'] || env.SENTIMENT_API_KEY,
    timeoutMs: 1000 * Number(values.timeout || env.SENTIMENT_TIMEOUT || 10),
    tls: values.tls || flag(env.SENTIMENT_CLIENT_TLS),
    caCert: values['ca-cert'] || env.SENTIMENT_CLIENT_TLS_CA,
    clientCert: values.cert || env.SENTIMENT_CLIENT_TLS_CERT,
    clientKey: values.key || env.SENTIMENT_CLIENT_TLS_KEY,
  });
}

function printTable(texts, response) {
  const rows = [['TEXT', 'LABEL', 'SCORE']];
  response.results.forEach((c, i) => rows.push([texts[i].slice(0, 40), c.label, c.score.toFixed(4)]));
  const widths = rows[0].map((_, col) => Math.max(...rows.map((row) => row[col].length)));
  for (const row of rows) console.log(row.map((cell, col) => cell.padEnd(widths[col])).join('  ').trimEnd());
}

async function run(command, args, values, client) {
  switch (command) {
    case 'classify': {
      if (args.length === 0) throw new UsageError('classify needs at least one TEXT');
      const response = await client.classify(args, {
        topK: Number(values['top-k']),
        returnLogits: values.logits,
        maxLength: Number(values['max-length']),
      });
      if (values.json) console.log(JSON.stringify(response, null, 2));
      else printTable(args, response);
      return 0;
    }
    case 'info':
      console.log(JSON.stringify(await client.modelInfo(), null, 2));
      return 0;
    case 'health': {
      const status = await client.health(values.service);
      console.log(status);
      return status === 'SERVING' ? 0 : 1;
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

class UsageError extends Error {}

async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  } catch (error) {
    console.error(`${error.message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help || positionals.length === 0) {
    console.error(USAGE);
    return values.help ? 0 : 2;
  }
  const [command, ...args] = positionals;
  let client;
  try {
    client = clientFrom(values);
    return await run(command, args, values, client);
  } catch (error) {
    if (error instanceof UsageError) console.error(`${error.message}\n${USAGE}`);
    else if (typeof error.code === 'number') console.error(`error: ${grpc.status[error.code]}: ${error.details}`);
    else console.error(`error: ${error.message}`);
    return 2;
  } finally {
    if (client) client.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

module.exports = { main };
