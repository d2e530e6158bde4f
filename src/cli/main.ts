export function main(argv: string[]): void { console.log("sealfs", argv.length) }
