/** esbuild's file loader: importing a .wasm file gives the URL it was copied to. */
declare module "*.wasm" {
  const url: string;
  export default url;
}
