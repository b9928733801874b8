#!/usr/bin/env node
'use strict';
// Command-line client, like the Python `sentiment-client`:
//
//   node client/node/cli.js [--target HOST:PORT] classify [--json] [--top-k N] [--logits] TEXT...
//   node client/node/cli.js classify --window [--stride N] [--aggregation mean|mean_logits|max]
//                                    [--return-windows] TEXT...
//   node client/node/cli.js classify TEXT --pair TEXT_PAIR [TEXT --pair TEXT_PAIR ...]   (one --pair per TEXT)
//   node client/node/cli.js [--target HOST:PORT] info [--model NAME]
//   node client/node/cli.js [--target HOST:PORT] models            (the served models, JSON)
//   (classify and info take --model NAME: a name from `models`; unset, the server's default model)
//   node client/node/cli.js [--target HOST:PORT] health [--service NAME]   (exit 0 if SERVING)
//
// Connection flags fall back to SENTIMENT_TARGET, SENTIMENT_API_KEY, SENTIMENT_TIMEOUT,
// SENTIMENT_CLIENT_TLS, SENTIMENT_CLIENT_TLS_CA, SENTIMENT_CLIENT_TLS_CERT and SENTIMENT_CLIENT_TLS_KEY.

const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const { SentimentClient } = require('./sentiment');

const USAGE = `usage: cli.js [--target HOST:PORT] [--api-key KEY] [--timeout SECONDS]
              [--tls] [--ca-cert FILE] [--cert FILE] [--key FILE]
              classify [--json] [--model NAME] [--top-k N] [--logits] [--max-length N]
                       [--window [--stride N] [--aggregation mean|mean_logits|max] [--return-windows]]
                       [--pair TEXT_PAIR]... TEXT...
              | info [--model NAME] | models | health [--service NAME]`;

const OPTIONS = {
  target: { type: 'string' },
  'api-key': { type: 'string' },
  timeout: { type: 'string' },
  tls: { type: 'boolean' },
  'ca-cert': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  json: { type: 'boolean', default: false },
  model: { type: 'string', default: '' },
  'top-k': { type: 'string', default: '0' },
  logits: { type: 'boolean', default: false },
  'max-length': { type: 'string', default: '0' },
  window: { type: 'boolean', default: false },
  stride: { type: 'string' },
  aggregation: { type: 'string' },
  'return-windows': { type: 'boolean', default: false },
  pair: { type: 'string', multiple: true },
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

// One row per text; with --window its number of windows, with --return-windows a row per window below.
function printTable(texts, pairs, response, window) {
  const rows = [['TEXT', ...(pairs ? ['PAIR'] : []), 'LABEL', 'SCORE', ...(window ? ['WINDOWS'] : [])]];
  response.results.forEach((c, i) => {
    const pair = pairs ? [pairs[i][1].slice(0, 40)] : [];
    const windows = window ? [String(c.num_windows)] : [];
    rows.push([texts[i].slice(0, 40), ...pair, c.label, c.score.toFixed(4), ...windows]);
    // Windows need --window, which pairs refuse: TEXT, LABEL, SCORE, WINDOWS line up.
    for (const w of c.windows) {
      rows.push([`  tokens ${w.start_token}-${w.end_token}`, w.scores[0].label, w.scores[0].score.toFixed(4), '']);
    }
  });
  const widths = rows[0].map((_, col) => Math.max(...rows.map((row) => row[col].length)));
  for (const row of rows) console.log(row.map((cell, col) => cell.padEnd(widths[col])).join('  ').trimEnd());
}

function count(values, flag) {
  const text = values[flag];
  if (!/^\d+$/.test(text)) throw new UsageError(`--${flag} must be a number, 0 or more: ${JSON.stringify(text)}`);
  return Number(text);
}

// The request's options from the flags, checked like the Python CLI checks them.
function classifyArgs(texts, values) {
  const given = (flag) => values[flag] !== undefined && values[flag] !== false;
  const windowOnly = ['stride', 'aggregation', 'return-windows'].filter(given).map((flag) => `--${flag}`);
  if (!values.window && windowOnly.length > 0) throw new UsageError(`${windowOnly.join(', ')} need --window`);
  if (values.window && values.pair) throw new UsageError('--window is for single texts, not --pair');
  if (values.aggregation !== undefined && !['mean', 'mean_logits', 'max'].includes(values.aggregation)) {
    throw new UsageError(`--aggregation must be mean, mean_logits or max, got ${JSON.stringify(values.aggregation)}`);
  }
  if (values.pair && values.pair.length !== texts.length) {
    throw new UsageError(`--pair given ${values.pair.length} times for ${texts.length} texts: give one per TEXT`);
  }
  const options = {
    model: values.model,
    topK: count(values, 'top-k'),
    returnLogits: values.logits,
    maxLength: count(values, 'max-length'),
  };
  if (values.pair) return { pairs: texts.map((text, i) => [text, values.pair[i]]), options };
  if (!values.window) return { options };
  return {
    options: {
      ...options,
      truncation: 'window',
      stride: values.stride === undefined ? undefined : count(values, 'stride'),
      aggregation: values.aggregation,
      returnWindows: values['return-windows'],
    },
  };
}

async function run(command, args, values, client) {
  switch (command) {
    case 'classify': {
      if (args.length === 0) throw new UsageError('classify needs at least one TEXT');
      const { pairs, options } = classifyArgs(args, values);
      const response = await (pairs ? client.classifyPairs(pairs, options) : client.classify(args, options));
      if (values.json) console.log(JSON.stringify(response, null, 2));
      else printTable(args, pairs, response, values.window);
      return 0;
    }
    case 'info':
      console.log(JSON.stringify(await client.modelInfo({ model: values.model }), null, 2));
      return 0;
    case 'models':
      console.log(JSON.stringify(await client.listModels(), null, 2));
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

module.exports = { main, classifyArgs };
