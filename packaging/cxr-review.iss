; Inno Setup 6 script for the Windows installer of CXR Review (UNTESTED: no Windows build
; machine was available; see README "Packaged installer").
;
; 1. On Windows, in the project's venv with the [build] extra:
;      set CXR_BUNDLE_VARIANT=cpu
;      pyinstaller --noconfirm --distpath dist\cpu --workpath build\cpu build.spec
; 2. iscc /DVariant=cpu packaging\cxr-review.iss
;    -> dist\cpu\cxr-review-<version>-<variant>-setup.exe
;
; Per-machine install into Program Files; user data stays in %LOCALAPPDATA%\cxr-review
; (platformdirs) and is not removed on uninstall.

#ifndef Variant
  #define Variant "cpu"
#endif
#define AppName "CXR Review"
#define AppVersion "0.1.0"
#define BundleDir "..\dist\" + Variant + "\cxr-review"

[Setup]
AppId={{6A4C2F0E-8F1B-4C55-9B1E-3C7D2A9E51C4}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion} ({#Variant})
AppPublisher=CXR Review maintainers
DefaultDirName={autopf}\CXR Review
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
OutputDir=..\dist\{#Variant}
OutputBaseFilename=cxr-review-{#AppVersion}-{#Variant}-setup
SetupIconFile=..\resources\icons\cxr-review.ico
UninstallDisplayIcon={app}\cxr-desktop.exe
Compression=lzma2/fast
SolidCompression=no
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
PrivilegesRequired=admin
WizardStyle=modern
; The bundle is several GB: do not let the wizard estimate from the compressed size.
DiskSpanning=no

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\cxr-desktop.exe"; IconFilename: "{app}\cxr-desktop.exe"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\cxr-desktop.exe"; Tasks: desktopicon

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Run]
; Checks the installation (decoders, model, predict + Grad-CAM); the console twin prints one JSON line.
Filename: "{app}\cxr-desktop-cli.exe"; Parameters: "--self-test"; StatusMsg: "Checking the installation..."; Flags: runhidden waituntilterminated
Filename: "{app}\cxr-desktop.exe"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
Type: filesandordirs; Name: "{app}"
