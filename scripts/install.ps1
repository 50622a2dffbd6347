# Installs studio-worker from a release archive (Windows x86_64):
#
#   install.ps1 [-Archive FILE] [-Version V] [-Variant cpu|cuda] [-Feed URL]
#               [-Prefix DIR] [-BinDir DIR] [-Service]
#   install.ps1 -Ui [-Archive FILE] [-Version V] [-Feed URL] [-Prefix DIR] [-BinDir DIR]
#
# The Windows twin of install.sh: without -Archive it asks the release feed
# for the newest release (or -Version V) and downloads
# studio-worker-V-x86_64-pc-windows-msvc-VARIANT.zip and its .sha256; the
# digest must match and manifest.json must name studio-worker and this
# target, else nothing is installed. Layout:
#   PREFIX\versions\V\   the whole release
#   PREFIX\current       a directory junction to versions\V
#   BINDIR\studio-worker.cmd  runs PREFIX\current\studio-worker.exe
# Defaults: PREFIX %LOCALAPPDATA%\studio-worker, BINDIR %LOCALAPPDATA%\studio-worker\bin.
# -Service then runs `studio-worker install-service` (a scheduled task at logon).
# -Ui installs the optional desktop window instead (studio-worker-ui-V-TARGET.zip,
# product studio-worker-ui) in PREFIX\ui, with BINDIR\studio-worker-ui.cmd.
# Not run on this project's CI machines (no Windows there): checked by hand.
[CmdletBinding()]
param(
    [string]$Archive = "",
    [string]$Version = "",
    [ValidateSet("cpu", "cuda")][string]$Variant = "cpu",
    [string]$Feed = $(if ($env:STUDIO_WORKER_FEED) { $env:STUDIO_WORKER_FEED } else { "https://api.github.com/repos/webbertakken/studio-worker/releases" }),
    [string]$Prefix = (Join-Path $env:LOCALAPPDATA "studio-worker"),
    [string]$BinDir = (Join-Path (Join-Path $env:LOCALAPPDATA "studio-worker") "bin"),
    [switch]$Service,
    [switch]$Ui
)
$ErrorActionPreference = "Stop"
$Target = "x86_64-pc-windows-msvc"
$Product = $(if ($Ui) { "studio-worker-ui" } else { "studio-worker" })

function Fail([string]$Message) {
    Write-Error "install.ps1: $Message"
    exit 1
}

function Get-Semver([string]$Tag) {
    if ($Tag -match '^(?:studio-worker-)?v?(\d+)\.(\d+)\.(\d+)$') {
        return [version]::new([int]$Matches[1], [int]$Matches[2], [int]$Matches[3])
    }
    return $null
}

$Work = Join-Path ([System.IO.Path]::GetTempPath()) ("studio-worker-install-" + [guid]::NewGuid())
New-Item -ItemType Directory -Path $Work | Out-Null
try {
    if (-not $Archive) {
        $Releases = @(Invoke-RestMethod -Uri $Feed -Headers @{ Accept = "application/vnd.github+json" })
        $Best = $null
        foreach ($R in $Releases) {
            $V = Get-Semver $R.tag_name
            if (-not $V -or $R.draft -or ($R.prerelease -and -not $Version)) { continue }
            if ($Version -and $V.ToString() -ne $Version.TrimStart("v")) { continue }
            if (-not $Best -or $V -gt $Best.V) { $Best = @{ V = $V; R = $R } }
        }
        if (-not $Best) { Fail "no matching release in $Feed" }
        $Name = $(if ($Ui) { "studio-worker-ui-$($Best.V)-$Target.zip" } else { "studio-worker-$($Best.V)-$Target-$Variant.zip" })
        $Asset = $Best.R.assets | Where-Object { $_.name -eq $Name }
        $Digest = $Best.R.assets | Where-Object { $_.name -eq "$Name.sha256" }
        if (-not $Asset -or -not $Digest) { Fail "release $($Best.V) has no $Name with its .sha256" }
        $Archive = Join-Path $Work $Name
        Write-Host "downloading $($Asset.browser_download_url)"
        Invoke-WebRequest -Uri $Asset.browser_download_url -OutFile $Archive
        Invoke-WebRequest -Uri $Digest.browser_download_url -OutFile "$Archive.sha256"
    }
    if (-not (Test-Path $Archive)) { Fail "$Archive does not exist" }
    if (-not (Test-Path "$Archive.sha256")) { Fail "$Archive.sha256 is missing: an archive is installed only with its digest" }
    $Want = ((Get-Content "$Archive.sha256" -Raw).Trim() -split '\s+')[0].ToLower()
    $Got = (Get-FileHash -Algorithm SHA256 $Archive).Hash.ToLower()
    if ($Want -ne $Got) { Fail "${Archive}: SHA-256 $Got does not match $Want (from its .sha256)" }

    $Unpack = Join-Path $Work "unpack"
    Expand-Archive -Path $Archive -DestinationPath $Unpack
    $Top = @(Get-ChildItem -Path $Unpack -Directory)
    if ($Top.Count -ne 1 -or -not (Test-Path (Join-Path $Top[0].FullName "manifest.json"))) {
        Fail "$Archive has no manifest.json in one top folder"
    }
    $Release = $Top[0].FullName
    $Manifest = Get-Content (Join-Path $Release "manifest.json") -Raw | ConvertFrom-Json
    if ($Manifest.product -ne $Product) { Fail "the archive is '$($Manifest.product)', not $Product" }
    if ($Manifest.target -ne $Target) { Fail "the archive is for $($Manifest.target), this machine is $Target" }
    foreach ($F in $Manifest.files) {
        $H = (Get-FileHash -Algorithm SHA256 (Join-Path $Release $F.path)).Hash.ToLower()
        if ($H -ne $F.sha256) { Fail "$($F.path) does not match the manifest" }
    }
    $Installed = $Manifest.version

    if ($Ui) {
        # The window is one binary, kept apart from the versions self-update switches.
        New-Item -ItemType Directory -Force -Path $Prefix, $BinDir | Out-Null
        $Dest = Join-Path $Prefix "ui"
        if (Test-Path $Dest) { Remove-Item -Recurse -Force $Dest }
        Move-Item $Release $Dest
        $Shim = Join-Path $BinDir "studio-worker-ui.cmd"
        Set-Content -Path $Shim -Encoding ASCII -Value "@start `"`" `"$Dest\studio-worker-ui.exe`" %*"
        Write-Host "installed studio-worker-ui $Installed in $Dest"
        Write-Host "  $Shim runs $Dest\studio-worker-ui.exe"
        return
    }

    $Versions = Join-Path $Prefix "versions"
    New-Item -ItemType Directory -Force -Path $Versions, $BinDir | Out-Null
    $Dest = Join-Path $Versions $Installed
    if (Test-Path $Dest) { Remove-Item -Recurse -Force $Dest }
    Move-Item $Release $Dest
    $Current = Join-Path $Prefix "current"
    if (Test-Path $Current) { (Get-Item $Current).Delete() }
    New-Item -ItemType Junction -Path $Current -Target $Dest | Out-Null
    $Shim = Join-Path $BinDir "studio-worker.cmd"
    Set-Content -Path $Shim -Encoding ASCII -Value "@`"$Current\studio-worker.exe`" %*"
    Write-Host "installed studio-worker $Installed in $Dest"
    Write-Host "  $Shim runs $Current\studio-worker.exe"
    if (-not (($env:PATH -split ';') -contains $BinDir)) { Write-Host "  add $BinDir to PATH to run it as studio-worker" }
    if ($Service) { & (Join-Path $Current "studio-worker.exe") install-service }
}
finally {
    Remove-Item -Recurse -Force $Work -ErrorAction SilentlyContinue
}
